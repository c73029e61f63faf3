"""The fastest format, measured: ``train.amp: auto`` and ``train.channels_last: auto`` resolved, per
architecture and device, to what a few timed training steps find fastest on the machine that runs the job,
as cuDNN's benchmark mode chooses convolution algorithms.

The candidates are amp off / bf16 (bf16 only where the device supports it) times channels_last off / on,
each restricted to the setting where it is explicit (``on``, ``off``, ``bf16`` bypass the measurement);
with one candidate left nothing is measured. Each candidate trains a copy of the model for a few steps
(forward + backward at the job's crop and batch size, random images; the model, its BatchNorm statistics
and torch's random state are left as they were) and the fastest step wins; candidates within 5% of it (``MARGIN``,
timing noise) count as ties, won by the earliest (fp32 before bf16, contiguous before channels_last).

The choice is cached per machine in one small JSON file (``$SMALLDL_CACHE/formats.json``, else
``$XDG_CACHE_HOME/smalldl/formats.json``, else ``~/.cache/smalldl/formats.json``), keyed by host name,
CPU or GPU name, torch version, device type (CPU: and threads), arch, crop, batch size and candidates,
so later jobs reuse it without measuring. The file is rewritten atomically under a lock, and the first
job to record a key wins: a job that measured at the same time as another adopts the recorded choice, so
every job of a machine agrees. A run pins its choice in a file of its own (``pin``) that a resumed run
reads back, so a run keeps one format from its first epoch to its last even if it resumes on another
machine. The choice and the timings go into the run's record (``formats``, ``format_step_s``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from smalldl.utils import atomic_path

if TYPE_CHECKING:
    import torch
    from torch import nn

CACHE_VERSION = 3  # 2: steps timed with kernels.speed_up, as fit trains; 3: its 1 x 1 convs by matmul
#: A candidate within this fraction of the fastest step counts as fast as it (timing noise): the earliest
#: such candidate is chosen (fp32 before bf16, contiguous before channels_last).
MARGIN = 0.05


@dataclass(frozen=True)
class Format:
    """One candidate: the ``amp`` ("off" or "bf16") and ``channels_last`` ("off" or "on") settings."""

    amp: str
    channels_last: str

    @property
    def name(self) -> str:
        return ("bf16" if self.amp == "bf16" else "fp32") + ("+channels_last" if self.channels_last == "on" else "")


def bf16_supported(device: torch.device) -> bool:
    """bf16 arithmetic in hardware: CUDA's check, or oneDNN's on a CPU (AVX-512 BF16 / AMX)."""
    import torch

    try:
        if device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported())
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def candidates(settings: Mapping[str, Any], device: torch.device) -> list[Format]:
    """The formats ``settings`` leave open, in order of preference on a tie."""
    amp, cl = settings.get("amp", "auto"), settings.get("channels_last", "auto")
    amps = ["off", "bf16"] if amp == "auto" and bf16_supported(device) else ["off"] if amp == "auto" else [amp]
    layouts = ["off", "on"] if cl == "auto" else [cl]
    return [Format(a, c) for a in amps for c in layouts]


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name."""
    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def cache_key(
    device: torch.device, *, arch: str, crop: int, batch_size: int, options: list[Format], host: str | None = None
) -> str:
    import torch

    parts = [host or socket.gethostname(), machine_name(device), f"torch {torch.__version__}", device.type]
    if device.type == "cpu":
        parts.append(f"threads {torch.get_num_threads()}")
    parts += [arch, f"crop {crop}", f"batch {batch_size}", ",".join(f.name for f in options)]
    return " | ".join(parts)


def cache_file() -> Path:
    """``$SMALLDL_CACHE/formats.json``, else under ``$XDG_CACHE_HOME/smalldl`` or ``~/.cache/smalldl``."""
    root = os.environ.get("SMALLDL_CACHE")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smalldl")
    return Path(root) / "formats.json"


def _read(path: Path) -> dict[str, Any]:
    """The cache's entries ({} when the file is missing, unreadable or of another version)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``'s lock file (no-op where flock is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        yield


def _record(path: Path, key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Add ``entry`` under ``key`` unless another job recorded it first; returns the recorded entry."""
    with _locked(path):
        entries = _read(path)
        if key in entries:
            return entries[key]
        entries[key] = entry
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1, sort_keys=True))
        return entry


def time_steps(
    model: nn.Module,
    fmt: Format,
    *,
    device: torch.device,
    crop: int,
    batch_size: int,
    steps: int = 3,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds per training step (forward and backward on ``batch_size`` random images of ``crop`` x
    ``crop``) of a copy of ``model`` in format ``fmt``: the fastest of ``steps`` after ``warmup``."""
    import torch

    from smalldl import kernels

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    memory_format = torch.channels_last if fmt.channels_last == "on" else torch.contiguous_format
    x = torch.rand(batch_size, 1, crop, crop, generator=torch.Generator().manual_seed(0)).to(device)
    x = x.contiguous(memory_format=memory_format)
    best = float("inf")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        trial = copy.deepcopy(model).to(device=device, memory_format=memory_format).train()
        kernels.speed_up(trial, device)  # as fit trains it
        for k in range(warmup + steps):
            sync(device)
            t0 = clock()
            trial.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fmt.amp == "bf16"):
                out = trial(x)
            out.float().mean().backward()
            sync(device)
            if k >= warmup:
                best = min(best, clock() - t0)
        del trial
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return best


def fastest_of(options: list[Format], step_s: Mapping[str, float]) -> Format:
    """The first of ``options`` within ``MARGIN`` of the fastest step: a later candidate (bf16, which
    costs precision; channels_last) must beat the earlier ones by more than timing noise."""
    best = min(step_s[f.name] for f in options)
    return next(f for f in options if step_s[f.name] <= best * (1 + MARGIN))


def choose(
    settings: Mapping[str, Any],
    *,
    model: nn.Module,
    device: torch.device,
    arch: str,
    timer: Callable[[Format], float] | None = None,
    cache: str | os.PathLike | None = None,
    pin: str | os.PathLike | None = None,
    pin_id: str = "",
    log: TextIO | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``settings`` with ``amp`` and ``channels_last`` explicit, and the record of the choice: ``amp``,
    ``channels_last``, ``chosen_by`` ("settings": nothing was auto; "only": one candidate; "measured";
    "cache"), ``machine`` and ``step_s`` (seconds per step of each candidate; {} when none was timed).
    ``timer(format)`` times one candidate (default ``time_steps`` on ``model`` at the settings' crop and
    batch size); ``cache`` defaults to ``cache_file()``. A ``pin`` file holding ``pin_id`` (a run's
    identity) gives back the choice recorded there; otherwise the choice is written there."""
    log = log if log is not None else sys.stderr
    options = candidates(settings, device)
    crop, batch_size = int(settings["crop"]), int(settings["batch_size"])
    pinned = _pinned(pin, pin_id)
    if pinned is not None:
        record = pinned
        print(f"formats: amp {record['amp']}, channels_last {record['channels_last']} (this run's)", file=log)
    elif len(options) == 1:
        auto = "auto" in (settings.get("amp", "auto"), settings.get("channels_last", "auto"))
        record = _make_record(options[0], "only" if auto else "settings", device, {})
    else:
        if timer is None:

            def timer(fmt: Format) -> float:
                return time_steps(model, fmt, device=device, crop=crop, batch_size=batch_size)

        key = cache_key(device, arch=arch, crop=crop, batch_size=batch_size, options=options)
        record = _measured(options, device, key=key, cache=cache, timer=timer, log=log)
        if pin is not None:
            with contextlib.suppress(OSError), atomic_path(pin) as tmp:
                tmp.write_text(json.dumps({"id": pin_id, "record": record}, sort_keys=True))
    resolved = {**settings, "amp": record["amp"], "channels_last": record["channels_last"]}
    return resolved, record


def _make_record(fmt: Format, chosen_by: str, device: torch.device, step_s: dict[str, float]) -> dict[str, Any]:
    return {
        "amp": fmt.amp,
        "channels_last": fmt.channels_last,
        "chosen_by": chosen_by,
        "machine": machine_name(device),
        "step_s": dict(step_s),
    }


def _pinned(pin: str | os.PathLike | None, pin_id: str) -> dict[str, Any] | None:
    if pin is None:
        return None
    try:
        data = json.loads(Path(pin).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("id") == pin_id and isinstance(data.get("record"), dict):
        return data["record"]
    return None


def _measured(
    options: list[Format],
    device: torch.device,
    *,
    key: str,
    cache: str | os.PathLike | None,
    timer: Callable[[Format], float],
    log: TextIO,
) -> dict[str, Any]:
    """The cached choice for ``key``, else the fastest of ``options`` by ``timer`` (then cached)."""
    path = Path(cache) if cache is not None else cache_file()
    by_name = {f.name: f for f in options}
    entry = _read(path).get(key)
    chosen_by = "cache"
    if entry is None or entry.get("choice") not in by_name:
        step_s = {f.name: float(timer(f)) for f in options}
        fastest = fastest_of(options, step_s)
        entry = {"choice": fastest.name, "step_s": step_s, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            recorded = _record(path, key, entry)
        except OSError as exc:
            print(f"formats: cache {path} not written ({exc})", file=log, flush=True)
            recorded = entry
        if recorded is not entry and recorded.get("choice") in by_name:
            entry = recorded  # another job recorded its choice first: every job of the machine agrees
        else:
            chosen_by = "measured"
    step_s = {k: float(v) for k, v in entry.get("step_s", {}).items()}
    timings = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in step_s.items())
    print(f"formats: {entry['choice']} ({chosen_by}; per training step: {timings})", file=log, flush=True)
    return _make_record(by_name[entry["choice"]], chosen_by, device, step_s)
