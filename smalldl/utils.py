"""Small shared helpers: seeds, atomic writes, progress lines for rule logs."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

from smalldl.errors import DiskFullError

T = TypeVar("T")


def derive_seed(*keys: object) -> int:
    """A 31-bit seed derived deterministically from any keys (global seed, task, n, seed, ...)."""
    text = "\x1f".join(str(k) for k in keys)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


#: errno values that mean "the disk is full" (quota included): an atomic write that fails with one of
#: them raises :class:`smalldl.errors.DiskFullError` naming the path and the free space.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file is created empty with mode ``0o666`` less the umask, as any tool's output (a
    shared results folder stays group-readable/writable under umask 002; ``mkstemp``'s 0600 would not).
    A full disk while the block writes is one :class:`~smalldl.errors.DiskFullError` naming ``path``
    and the free space; the temporary file is removed whatever happens.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_tmp(path)
    try:
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        except OSError as exc:
            if exc.errno in DISK_FULL and not isinstance(exc, DiskFullError):
                raise disk_full(path, exc, written=_size(tmp_path)) from None
            raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _create_tmp(path: Path) -> Path:
    """An empty new file ``.<name>.<random>.tmp`` beside ``path``, created with mode 0o666 & ~umask."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def disk_full(path: str | os.PathLike[str], exc: OSError, written: int | None = None) -> DiskFullError:
    """The one-line error for a write to ``path`` that failed with ENOSPC/EDQUOT (``exc``)."""
    folder = Path(path).parent
    try:
        free = f"{format_bytes(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    done = f", {format_bytes(written)} of it written" if written else ""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return DiskFullError(
        f"cannot write {path}: {reason} ({free} in {folder}{done}); free space there (or raise the quota) "
        "and run again",
        errno=exc.errno,
    )


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'`` (binary units, as ``df -h``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def as_number(x: Any) -> float:
    """A table or JSON cell as a float; NaN where it is absent (None), null or not a number."""
    try:
        return math.nan if x is None else float(x)
    except (TypeError, ValueError):
        return math.nan


def format_number(x: Any, digits: int = 3) -> str:
    """A number as the results tables print it: ``digits`` decimals, '–' where there is none (None, NaN or
    not a number), '∞' for infinity."""
    x = as_number(x)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}f}"


def _os_error_behind(exc: BaseException) -> OSError | None:
    """The OSError that ``exc`` was raised while handling (or from), if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def save_torch(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` atomically (checkpoints, models), through a Python file object. A full disk is one
    :class:`~smalldl.errors.DiskFullError` naming ``path`` and the free space, the temporary file removed
    (see :func:`atomic_path`), whichever way torch reports it: an ENOSPC from the file object, or torch's
    zip writer's ``RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos ...`` (a short
    write: raised while handling the file object's ENOSPC, or with no OSError behind it at all)."""
    import torch

    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                torch.save(obj, fh)
        except RuntimeError as exc:
            behind = _os_error_behind(exc)
            if behind is not None and behind.errno in DISK_FULL:
                raise disk_full(path, behind, written=_size(tmp)) from None
            if behind is None and "unexpected pos" in str(exc):
                short = OSError(errno.ENOSPC, "short write (the disk or quota is full)")
                raise disk_full(path, short, written=_size(tmp)) from None
            raise


#: Bytes read from each end of a file by :func:`sample_sha256`.
SAMPLE_BYTES = 1 << 20


def sample_sha256(path: str | os.PathLike[str]) -> str:
    """A cheap fingerprint of a (large) file: SHA-256 of its size, first and last ``SAMPLE_BYTES`` bytes
    (milliseconds for a cache of 10^5 images; catches truncation, a rewrite, a damaged header or tail)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h.update(str(size).encode())
        h.update(fh.read(SAMPLE_BYTES))
        if size > SAMPLE_BYTES:
            fh.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
            h.update(fh.read(SAMPLE_BYTES))
    return h.hexdigest()


#: The key, in a parquet table's ``attrs`` (pandas keeps them in the file's metadata), of the record its
#: producer wrote (:func:`write_parquet`): its row count and a hash of each column.
TABLE_RECORD = "smalldl_table"


def column_hashes(table: Any) -> dict[str, str]:
    """A short hash of each column of ``table`` (its values, not the dtype, which a parquet round trip may
    change: object strings come back as ``str``; not the row index): cheap (pandas' vectorised hash), enough
    to tell a flipped label or a rewritten row."""
    import pandas as pd

    out = {}
    for column in table.columns:
        values = pd.util.hash_pandas_object(table[column], index=False).to_numpy()
        out[str(column)] = hashlib.sha256(values.tobytes()).hexdigest()[:16]
    return out


def write_parquet(table: Any, path: str | os.PathLike[str]) -> None:
    """Write ``table`` (a DataFrame) to ``path`` atomically, with the record :func:`read_table` checks: its
    row count and :func:`column_hashes` (in ``attrs``, which pandas keeps in the parquet metadata)."""
    out = table.reset_index(drop=True)
    # the table's own attrs stay (an index keeps the CSV its labels come from: check_labels names it)
    out.attrs = {**table.attrs, TABLE_RECORD: {"rows": len(out), "columns": column_hashes(out)}}
    with atomic_path(path) as tmp:
        out.to_parquet(tmp, index=False)


#: The checksum file :func:`write_csv` writes beside a CSV table (``<name>.csv.sha256``, ``sha256sum -c``'s
#: format), which :func:`read_table` checks.
CSV_RECORD_SUFFIX = ".sha256"


def write_csv(table: Any, path: str | os.PathLike[str]) -> None:
    """Write ``table`` to the CSV ``path`` atomically, and its SHA-256 beside it (``<path>.sha256``, the
    record :func:`read_table` checks: a CSV a later job reads, e.g. a training subset, that was edited or
    truncated is then one :func:`~smalldl.errors.damaged` line, not a study of other images)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
    with atomic_path(path.with_name(path.name + CSV_RECORD_SUFFIX)) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"{digest}  {path.name}\n")


def _check_csv_record(path: Path) -> None:
    from smalldl.errors import damaged

    record = path.with_name(path.name + CSV_RECORD_SUFFIX)
    if not record.is_file():
        return  # written by an older smalldl or by hand: read unchecked
    recorded = record.read_text(encoding="utf-8").split()[:1]
    if hashlib.sha256(path.read_bytes()).hexdigest() not in recorded:
        raise damaged(path, f"its SHA-256 differs from what its producer recorded in {record.name}")


def read_table(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """A parquet or CSV table an earlier job wrote (a split, a subset, a run's predictions); one that cannot
    be read (truncated, overwritten) is one :func:`~smalldl.errors.damaged` line naming it and the command
    that rebuilds it. A parquet table that :func:`write_parquet` wrote is checked against its record (row
    count, each column read), a CSV that :func:`write_csv` wrote against its SHA-256: a rewritten table (a
    flipped label) is that line too. A table without a record (written by an older smalldl or by hand) is
    read unchecked."""
    import pandas as pd

    from smalldl.errors import damaged

    path = Path(path)
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path, **kwargs)
        else:
            _check_csv_record(path)
            return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # pyarrow's errors are OSError / ValueError
        raise damaged(path, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    record = table.attrs.pop(TABLE_RECORD, None)
    if record is None:
        return table
    try:
        rows, recorded = int(record["rows"]), dict(record["columns"])
    except (KeyError, TypeError, ValueError):
        raise damaged(path, f"its record of what its producer wrote is not one: {record!r:.80}") from None
    if len(table) != rows:
        raise damaged(path, f"{len(table)} rows, its producer wrote {rows}")
    now = column_hashes(table)
    changed = [c for c in now if c in recorded and now[c] != recorded[c]]
    if changed:
        raise damaged(path, f"column(s) {', '.join(changed)} differ from what its producer wrote")
    return table


#: The lock file of a folder a training job writes into (``one_writer``).
LOCK_NAME = ".smalldl.lock"


@contextlib.contextmanager
def one_writer(lock: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold ``lock`` (an ``flock``ed file: freed when the process ends, killed or not) for the block, so that
    one process at a time trains into a run folder. A second one (the rerun of a job whose first process
    still runs: an orphan of a killed ``snakemake``) stops with one line naming the folder and the process
    that holds it, before it touches anything there."""
    import fcntl

    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            from smalldl.errors import InputError

            raise InputError(
                f"{lock.parent} is being written by another process ({holder}, holding {lock}): {what} runs "
                "once at a time. An orphan of a killed snakemake? Wait for it to end or stop it (kill <pid>), "
                "then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)
        yield
    finally:
        os.close(fd)  # frees the lock


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically (sorted keys, indented) so a killed job never leaves half a file."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def _finite(obj: Any) -> Any:
    """NaN/inf become null: JSON has no NaN (an undefined AUC is written as null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return _finite(obj.tolist())
    return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Progress:
    """Count finished units and print one plain progress line every ``every`` seconds and at the end.

    Lines, not carriage returns, so that ``tail -f`` on a rule's log shows where a job is::

        generate synth_chest: 1200/5000 (24%) 310.2 img/s, eta 12s

    ``update(n)`` suits work that finishes in blocks (chunks from a process pool).
    """

    def __init__(
        self, total: int | None, desc: str = "", unit: str = "it", every: float = 2.0, file: TextIO | None = None
    ) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.out = file if file is not None else sys.stderr
        self.count = self.printed = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.last >= self.every or self.count == self.total:
            self.last = now
            self._print(now)

    def close(self) -> None:
        """Print the final count unless the last line already showed it."""
        if self.printed != self.count or self.count == 0:
            self._print(time.monotonic())

    def _print(self, now: float) -> None:
        self.printed = self.count
        print(_progress_line(self.desc, self.count, self.total, now - self.start, self.unit), file=self.out, flush=True)


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    every: float = 2.0,
    file: TextIO | None = None,
) -> Iterator[T]:
    """Iterate ``iterable`` with a :class:`Progress` counting one unit per item."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    tracker = Progress(total, desc, unit, every, file)
    for item in iterable:
        yield item
        tracker.update()
    tracker.close()


def _progress_line(desc: str, count: int, total: int | None, elapsed: float, unit: str) -> str:
    rate = count / elapsed if elapsed > 0 else float("inf")
    if total:
        eta = (total - count) / rate if rate > 0 else float("inf")
        return f"{desc}: {count}/{total} ({100 * count / total:.0f}%) {rate:.1f} {unit}/s, eta {eta:.0f}s"
    return f"{desc}: {count} {rate:.1f} {unit}/s"


def process_start_time() -> float:
    """When this process started (epoch seconds), from /proc (Linux); the current time where there is no
    /proc. ``time.time() - process_start_time()`` is the interpreter's start-up and imports so far."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, after pid and (comm)
        uptime = float(Path("/proc/uptime").read_text().split()[0])  # seconds since boot, now
        # not /proc/stat's btime: whole seconds, so a start time off by up to a second
        return time.time() - max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()
