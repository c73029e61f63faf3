"""GPU slots: which GPU a training job runs on, so that the concurrent jobs of one box spread over all of
its GPUs, at most ``jobs_per_gpu`` to a card.

A slot is a lock file per (GPU, slot number) in a directory the jobs of the box share (``$SMALLDL_SLOTS``,
else ``<temp dir>/smalldl-slots-<uid>``), held with ``fcntl.flock`` on a file kept open for the job's life:
the kernel drops the lock when the process ends, so a killed job (SIGKILL included) frees its slot for
the next claimant. Claims take turns (``claim.lock``): the claimant first in line takes a slot on the
least loaded GPU that has fewer than its ``jobs_per_gpu`` jobs, or waits there, polling, so that a job
wanting a card of its own (``jobs_per_gpu`` 1) is not overtaken for ever by jobs that share. GPUs are
told apart by UUID, the same in every process whatever its ``CUDA_VISIBLE_DEVICES``: jobs that see
different GPUs (SLURM allocations on one node) never wait for each other, and a job uses only what it sees.

A CPU job (device ``cpu``, or ``auto`` without a visible GPU) claims nothing. ``SMALLDL_FAKE_GPUS=N``
stands N fake GPUs in for the real ones (slots claimed as for real ones, the job computing on the CPU):
for tests on machines without one.

Light: standard library only (torch is imported only to list real GPUs).
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from smalldl.errors import InputError

#: The directory of the slot files, when set (else one under the system temp dir, per user).
SLOTS_ENV = "SMALLDL_SLOTS"
#: N fake GPUs instead of the visible ones (tests): slots as for real GPUs, computing on the CPU.
FAKE_ENV = "SMALLDL_FAKE_GPUS"
MUTEX = "claim.lock"


@dataclass(frozen=True)
class Gpu:
    """One visible GPU: ``index`` in this process (``cuda:<index>``), ``key`` the same card in every
    process of the box (its UUID), and the torch device a job on it computes on."""

    index: int
    key: str
    torch_device: str


@dataclass
class Slot:
    """A claimed slot: slot ``index`` of ``gpu``, held while its lock file stays open."""

    gpu: Gpu
    index: int
    path: Path
    fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


def visible_gpus() -> list[Gpu]:
    """The GPUs this process sees (``CUDA_VISIBLE_DEVICES`` respected), or ``$SMALLDL_FAKE_GPUS`` fake ones."""
    fake = os.environ.get(FAKE_ENV, "").strip()
    if fake:
        if not fake.isdigit():
            raise InputError(f"{FAKE_ENV}={fake!r}: expected a number of fake GPUs")
        # named after the CUDA_VISIBLE_DEVICES entries when set (a SLURM job's own fake GPUs), as real
        # ones are told apart by UUID: jobs given different (fake) GPUs never wait for each other
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        return [Gpu(i, f"fake{visible[i] if i < len(visible) else i}", "cpu") for i in range(int(fake))]
    import torch

    if not torch.cuda.is_available():
        return []
    return [Gpu(i, _gpu_key(torch, i), f"cuda:{i}") for i in range(torch.cuda.device_count())]


def _gpu_key(torch, index: int) -> str:
    """The card's UUID; else its CUDA_VISIBLE_DEVICES entry; else its index."""
    try:
        return f"GPU-{torch.cuda.get_device_properties(index).uuid}"
    except (AttributeError, RuntimeError):
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        return visible[index] if index < len(visible) else str(index)


def slot_directory(directory: str | Path | None = None) -> Path:
    """Where the slot files are: ``directory``, else ``$SMALLDL_SLOTS``, else a folder of this user's
    under the system temp dir (created, private)."""
    chosen = directory or os.environ.get(SLOTS_ENV)
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.gettempdir()) / f"smalldl-slots-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.getuid():
        raise InputError(f"GPU slot directory {path} belongs to another user: set {SLOTS_ENV} to a folder of yours")
    return path


def _file_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)


def _slot_path(directory: Path, gpu: Gpu, index: int) -> Path:
    return directory / f"{_file_key(gpu.key)}.{index}.lock"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def occupancy(directory: str | Path | None = None) -> dict[str, set[int]]:
    """The held slots per GPU (file key -> slot numbers). Exact only while no claim is under way (a
    claimant holds ``claim.lock``): a free slot is found by locking it for a moment."""
    held: dict[str, set[int]] = {}
    for path in slot_directory(directory).glob("*.lock"):
        parts = path.name.rsplit(".", 2)
        if path.name == MUTEX or len(parts) != 3 or not parts[1].isdigit():
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            if _try_lock(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:
                held.setdefault(parts[0], set()).add(int(parts[1]))
        finally:
            os.close(fd)
    return held


def _claim_now(directory: Path, gpus: Sequence[Gpu], jobs_per_gpu: int, job: str) -> tuple[Slot, int] | None:
    """A slot on the least loaded GPU with room (and the jobs on it before), or None if every GPU is full."""
    held = occupancy(directory)
    load = {gpu.key: held.get(_file_key(gpu.key), set()) for gpu in gpus}
    for gpu in sorted((g for g in gpus if len(load[g.key]) < jobs_per_gpu), key=lambda g: (len(load[g.key]), g.index)):
        index = min(set(range(len(load[gpu.key]) + 1)) - load[gpu.key])
        path = _slot_path(directory, gpu, index)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):  # taken outside the claim turns (not by this module): try the next GPU
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')} {job}\n".encode())
        return Slot(gpu, index, path, fd), len(load[gpu.key])
    return None


def claim(
    gpus: Sequence[Gpu],
    jobs_per_gpu: int = 1,
    *,
    job: str = "",
    directory: str | Path | None = None,
    poll: float = 1.0,
) -> Slot:
    """A slot on one of ``gpus`` with fewer than ``jobs_per_gpu`` jobs, the least loaded first; waits
    (polling every ``poll`` s, with a log line) while there is none. Release it with ``Slot.release``
    (or let the process end)."""
    if not gpus:
        raise ValueError("no GPU to claim a slot on")
    if jobs_per_gpu < 1:
        raise InputError(f"jobs_per_gpu must be at least 1, not {jobs_per_gpu}")
    where = slot_directory(directory)
    start = time.monotonic()
    waited = my_turn = False
    mutex = os.open(where / MUTEX, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            my_turn = my_turn or _try_lock(mutex)
            got = my_turn and _claim_now(where, gpus, jobs_per_gpu, job)
            if got:
                break
            if not waited:
                names = ", ".join(f"{g.torch_device} {g.key}" for g in gpus)
                print(
                    f"waiting for a GPU slot: at most {jobs_per_gpu} job(s) on each of {len(gpus)} GPU(s) ({names}),"
                    f" all taken or another job first in line; holders: cat {where}/*.lock",
                    file=sys.stderr,
                    flush=True,
                )
                waited = True
            time.sleep(poll)
    finally:
        os.close(mutex)  # the turn passes to the next claimant
    slot, before = got
    after = f", after waiting {time.monotonic() - start:.0f} s" if waited else ""
    print(
        f"GPU slot: {slot.gpu.torch_device} ({slot.gpu.key}) slot {slot.index}, job {before + 1} of at most"
        f" {jobs_per_gpu} on it{after}",
        file=sys.stderr,
        flush=True,
    )
    return slot


@contextmanager
def job_device(
    device: str,
    jobs_per_gpu: int = 1,
    *,
    job: str = "",
    gpus: Sequence[Gpu] | None = None,
    directory: str | Path | None = None,
    poll: float = 1.0,
) -> Iterator[tuple[str, Slot | None]]:
    """(torch device name, slot) of a training job for the ``with`` block, the slot held until it ends:
    ``("cpu", None)`` for device ``cpu`` or ``auto`` without a GPU, else the device of a claimed slot on
    ``gpus`` (default: the visible ones). Device ``cuda`` without a visible GPU is an InputError."""
    if device == "cpu":
        yield "cpu", None
        return
    gpus = visible_gpus() if gpus is None else list(gpus)
    if not gpus:
        if device == "cuda":
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise InputError(f"device: cuda, but no CUDA device is visible (CUDA_VISIBLE_DEVICES={visible})")
        yield "cpu", None
        return
    slot = claim(gpus, jobs_per_gpu, job=job, directory=directory, poll=poll)
    try:
        yield slot.gpu.torch_device, slot
    finally:
        slot.release()
