"""The images of a dataset's index as the index job found them: ``resources/index/<dataset>.files.tsv``
(path, size, mtime_ns per image), written by the index job beside ``resources/index/<dataset>.parquet``.

The images of ChestX-ray14, CheXpert and MURA (10^5 files) are not inputs of the index job: Snakemake would
keep a record per file and stat each one several times at every DAG build. Instead, at each DAG build the
main Snakemake process compares them with this manifest once, in parallel threads (:func:`mark`), and sets
the modification time of one stamp file, ``resources/index/<dataset>.images``, an input of the index job: the epoch
when every image is as the index job found it, now when one changed (replaced, resized, removed). A changed
image thus reruns the index and what depends on it (``snakemake -n`` shows it, and says which image), and
restoring it undoes that, with no state kept between runs. ``python -m smalldl.data.manifest [resources/index/]`` asks
the same question outside Snakemake: one line per dataset whose images changed, exit 1.
A folder dataset's images are inputs of its index job as well (10^2-10^3 files).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from smalldl import layout
from smalldl.errors import InputError
from smalldl.utils import atomic_path

SUFFIX = ".files.tsv"
STAMP_SUFFIX = ".images"
HEADER = "path\tsize\tmtime_ns"


def manifest_path(index_parquet: str | Path) -> Path:
    """``<dataset>.files.tsv`` beside ``<dataset>.parquet`` (in resources/index/)."""
    index_parquet = Path(index_parquet)
    return index_parquet.with_name(index_parquet.stem + SUFFIX)


def stamp_path(index_parquet: str | Path) -> Path:
    """``resources/index/<dataset>.images``: the index job's input whose modification time says whether the images
    changed since the index was built (:func:`mark`)."""
    index_parquet = Path(index_parquet)
    return index_parquet.with_name(index_parquet.stem + STAMP_SUFFIX)


def mark(index_parquet: str | Path, workers: int = 16) -> str | None:
    """Compare the images of ``index_parquet`` with its manifest and set its stamp's modification time:
    the epoch (older than any index) when nothing changed or no index was built yet, now when an image
    changed, so that Snakemake reruns the index job and what depends on it. The line that says so, or None.
    Called by the main Snakemake process at each DAG build (rules/common.smk), never by a job."""
    index_parquet, manifest = Path(index_parquet), manifest_path(index_parquet)
    changed = changed_files(manifest, workers) if index_parquet.is_file() and manifest.is_file() else []
    stamp = stamp_path(index_parquet)
    # what it says changes with the images too: Snakemake does not count an input newer than its job's
    # outputs as updated when its content is the one recorded when the job ran
    text = (
        "Its modification time is what matters: the epoch while the images are as the index job found them\n"
        f"({manifest.name}), the time of the last DAG build that found one changed (smalldl.data.manifest).\n"
    )
    if changed:
        now = stat_all(changed, workers)
        state = hashlib.sha256(repr(list(zip(changed, now, strict=True))).encode()).hexdigest()
        text += f"changed: {len(changed)} image(s), first {changed[0]}, state {state}\n"
    if not stamp.is_file() or stamp.read_text(encoding="utf-8") != text:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(stamp) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    if not changed:
        os.utime(stamp, ns=(0, 0))
        return None
    os.utime(stamp)
    return (
        f"{index_parquet}: {len(changed)} image(s) changed since it was built (first: {changed[0]}): "
        "the index and what depends on it rerun"
    )


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)  # not there: recorded as such, a file that appears later is a change
    return (st.st_size, st.st_mtime_ns)


def stat_all(paths: Sequence[str], workers: int = 16) -> list[tuple[int, int]]:
    """(size, mtime_ns) of each path, (-1, -1) for a missing one; in ``workers`` threads, each a contiguous
    share of the paths (a network file system answers a stat in milliseconds; one future per path would
    cost more than a local disk's stat)."""
    paths = list(paths)
    if len(paths) < 2048 or workers <= 1:
        return [_stat(p) for p in paths]
    step = -(-len(paths) // workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = pool.map(lambda i: [_stat(p) for p in paths[i : i + step]], range(0, len(paths), step))
        return [st for part in parts for st in part]


def write_manifest(paths: Iterable[str], out: str | Path, workers: int = 16) -> int:
    """Record (path, size, mtime_ns) of every path in ``out``, atomically; the number of files."""
    paths = [str(p) for p in paths if str(p)]
    stats = stat_all(paths, workers)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(HEADER + "\n")
        for path, (size, mtime) in zip(paths, stats, strict=True):
            if "\t" in path or "\n" in path:
                raise InputError(f"{path!r}: an image path with a tab or newline cannot be recorded in {out}")
            fh.write(f"{path}\t{size}\t{mtime}\n")
    return len(paths)


def read_manifest(path: str | Path) -> list[tuple[str, int, int]]:
    """The records of a manifest; one that is not one is an InputError naming it."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != HEADER:
        raise InputError(f"{path}: not an image manifest (first line is not {HEADER!r})")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        try:
            rows.append((parts[0], int(parts[1]), int(parts[2])))
        except (IndexError, ValueError):
            raise InputError(f"{path}, line {number}: not path<TAB>size<TAB>mtime_ns") from None
    return rows


def changed_files(manifest: str | Path, workers: int = 16) -> list[str]:
    """The images of ``manifest`` whose size or mtime differ from what the index job recorded."""
    rows = read_manifest(manifest)
    now = stat_all([r[0] for r in rows], workers)
    return [path for (path, size, mtime), st in zip(rows, now, strict=True) if st != (size, mtime)]


def check(index_parquets: Sequence[str | Path], workers: int = 16, out=None) -> int:
    """One line per dataset whose images changed since its index was built; the number of such datasets."""
    out = out or sys.stdout
    stale = 0
    for index_parquet in index_parquets:
        manifest = manifest_path(index_parquet)
        if not manifest.is_file():
            print(f"{index_parquet}: no image manifest ({manifest}; an index built by an older smalldl)", file=out)
            continue
        changed = changed_files(manifest, workers)
        if changed:
            stale += 1
            print(
                f"{index_parquet}: {len(changed)} image(s) changed since it was built (first: {changed[0]}): "
                f"rerun it and what depends on it with `snakemake --forcerun {index_parquet}` and your usual "
                "options",
                file=out,
            )
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smalldl.data.manifest",
        description="Say which datasets' images changed since their index was built "
        f"({layout.INDEX}/<dataset>.files.tsv).",
    )
    parser.add_argument(
        "paths", nargs="*", default=[layout.INDEX], help=f"index parquet files or folders ({layout.INDEX}/)"
    )
    parser.add_argument("--workers", type=int, default=16, help="parallel stats (default 16)")
    args = parser.parse_args(argv)
    parquets: list[Path] = []
    for p in map(Path, args.paths):
        parquets += sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    try:
        return 1 if check(parquets, args.workers) else 0
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
