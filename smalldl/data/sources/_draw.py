"""Shared helpers for the synthetic generators: coordinate grids, soft shapes, noise, PNG output, runner.

Everything here is deterministic given its inputs: random fields are drawn from a ``numpy.random.Generator``
passed in by the caller, never from global state.

Coordinates are *normalised*: ``x`` runs from -1 (left image edge) to +1 (right image edge), ``y`` from -1
(top) to +1 (bottom); pixel centres sit at ``-1 + (i + 0.5) * 2 / size``.  Drawing in normalised
coordinates makes every generator independent of the output resolution.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from smalldl.errors import InputError
from smalldl.utils import Progress, atomic_path

F32 = np.float32


# ----------------------------------------------------------------------------------------------------
# grids and soft shapes
# ----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates ``(X, Y)``, each ``(size, size)`` float32, read-only."""
    c = ((np.arange(size, dtype=np.float64) + 0.5) * (2.0 / size) - 1.0).astype(F32)
    xx, yy = np.meshgrid(c, c)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def pixel(size: int) -> float:
    """Width of one pixel in normalised units."""
    return 2.0 / size


def ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance ``d`` (> 0 inside): 0 outside, 1 inside, linear edge."""
    return np.clip(0.5 + d * (1.0 / width), 0.0, 1.0)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite smooth step from 0 (x <= e0) to 1 (x >= e1)."""
    t = np.clip((x - e0) * (1.0 / (e1 - e0)), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate coordinates by ``angle`` radians (counter-clockwise in a y-up frame)."""
    c, s = math.cos(angle), math.sin(angle)
    return c * x - s * y, s * x + c * y


def segment_distance(
    x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each point to segment ``p0``-``p1`` and the unclipped position ``t`` along it."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = dx * dx + dy * dy or 1e-12
    t = ((x - p0[0]) * dx + (y - p0[1]) * dy) * (1.0 / length2)
    tc = np.clip(t, 0.0, 1.0)
    ex = x - (p0[0] + tc * dx)
    ey = y - (p0[1] + tc * dy)
    return np.sqrt(ex * ex + ey * ey), t


class Window:
    """A rectangular sub-region of a ``size`` x ``size`` canvas covering a normalised bounding box.

    Drawing small primitives only inside their window keeps the cost proportional to their area.
    """

    __slots__ = ("sl", "x", "y", "empty")

    def __init__(self, size: int, x0: float, x1: float, y0: float, y1: float) -> None:
        def to_px(v: float) -> float:
            return (v + 1.0) * size / 2.0

        c0 = max(0, int(math.floor(to_px(min(x0, x1)))))
        c1 = min(size, int(math.ceil(to_px(max(x0, x1)))) + 1)
        r0 = max(0, int(math.floor(to_px(min(y0, y1)))))
        r1 = min(size, int(math.ceil(to_px(max(y0, y1)))) + 1)
        self.empty = c1 <= c0 or r1 <= r0
        self.sl = (slice(r0, max(r0, r1)), slice(c0, max(c0, c1)))
        gx, gy = grid(size)
        self.x = gx[self.sl]
        self.y = gy[self.sl]

    @classmethod
    def around(cls, size: int, cx: float, cy: float, radius: float) -> Window:
        """Window of the square of half-side ``radius`` around ``(cx, cy)``."""
        return cls(size, cx - radius, cx + radius, cy - radius, cy + radius)


# ----------------------------------------------------------------------------------------------------
# noise
# ----------------------------------------------------------------------------------------------------


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise of roughly unit standard deviation with about ``cells`` blobs across the image.

    Drawn on a ``(cells + 3)``-square lattice and upsampled bicubically (PIL, deterministic).
    """
    n = int(cells) + 3
    lattice = rng.standard_normal((n, n), dtype=F32)
    img = Image.fromarray(lattice, mode="F")
    # crop one lattice cell from each border so the bicubic edges do not show; 1.24 restores unit std
    box = (1.0, 1.0, n - 1.0, n - 1.0)
    out = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC, box=box), dtype=F32)
    return out * F32(1.24)


def grain(rng: np.random.Generator, size: int, corr: int = 2) -> np.ndarray:
    """Zero-mean, roughly unit-variance pixel noise, correlated over ``corr`` pixels (detector mottle).

    Uniform deviates (several times cheaper than normal ones); the correlated part is bilinearly upsampled,
    so the sum is close to Gaussian in appearance.
    """
    fine = rng.random((size, size), dtype=F32) - F32(0.5)
    if corr <= 1:
        return fine * F32(3.4641)
    small = max(2, size // corr)
    lattice = rng.random((small, small), dtype=F32) - F32(0.5)
    out = np.asarray(Image.fromarray(lattice, mode="F").resize((size, size), Image.Resampling.BILINEAR))
    return out * F32(4.5) + fine * F32(1.6)


# ----------------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------------


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Map an image in [0, 1] (clipped) to uint8 with rounding."""
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str | os.PathLike[str], img: np.ndarray) -> None:
    """Write a uint8 2-D array as an 8-bit grayscale PNG (mode "L"), byte-deterministic."""
    if img.dtype != np.uint8 or img.ndim != 2:
        raise TypeError(f"expected a 2-D uint8 image, got {img.dtype} {img.shape}")
    Image.fromarray(img, mode="L").save(path, format="PNG", compress_level=6)


# ----------------------------------------------------------------------------------------------------
# argument validation
# ----------------------------------------------------------------------------------------------------


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """Return ``value`` as int if it is an integer in [lo, hi], else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, lo: float, hi: float) -> float:
    """``value`` as float if it is a finite number in [lo, hi], else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < lo or v > hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return v


def check_range(name: str, value: Any, lo: int) -> tuple[int, int]:
    """An inclusive integer range given as ``int`` or ``(low, high)`` with ``lo <= low <= high``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{name} must be an integer or a (low, high) pair, got {value!r}")
    a = check_int(f"{name}[0]", value[0], lo)
    b = check_int(f"{name}[1]", value[1], lo)
    if b < a:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return a, b


def check_common(seed: Any, image_size: Any, workers: Any) -> tuple[int, int, int]:
    """Validate the arguments every generator shares."""
    return (
        check_int("seed", seed, 0),
        check_int("image_size", image_size, 32, 4096),
        check_int("workers", workers, 1, 1024),
    )


# ----------------------------------------------------------------------------------------------------
# runner
# ----------------------------------------------------------------------------------------------------


RenderFn = Callable[[Any, int], np.ndarray]


def _render_chunk(args: tuple[RenderFn, str, int, list[tuple[str, Any]]]) -> int:
    render, out_dir, image_size, jobs = args
    root = Path(out_dir)
    for rel_path, job in jobs:
        save_png(root / rel_path, render(job, image_size))
    return len(jobs)


def render_all(
    render: RenderFn,
    jobs: Sequence[tuple[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    image_size: int,
    workers: int,
    desc: str,
    chunk_size: int | None = None,
) -> None:
    """Render ``jobs`` (``(relative_png_path, job)`` pairs) with ``render(job, image_size)`` and save PNGs.

    ``render`` must be a module-level function (picklable). With ``workers > 1`` chunks of images are
    rendered in a process pool; every image depends only on its own job, so the bytes do not depend on
    ``workers``. Progress lines go to stderr.  ``chunk_size`` defaults to 64 images, fewer when that would
    leave workers idle (at least four chunks per worker).
    """
    root = str(out_dir)
    if chunk_size is None:
        chunk_size = max(1, min(64, math.ceil(len(jobs) / (4 * max(workers, 1)))))
    chunks = [list(jobs[i : i + chunk_size]) for i in range(0, len(jobs), chunk_size)]
    tasks = [(render, root, image_size, c) for c in chunks]

    tracker = Progress(len(jobs), desc=desc, unit="img")
    with contextlib.ExitStack() as stack:
        if workers <= 1 or len(chunks) <= 1:
            counts: Iterator[int] = map(_render_chunk, tasks)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=min(workers, len(chunks))))
            counts = pool.map(_render_chunk, tasks)
        for n in counts:
            tracker.update(n)
    tracker.close()


def prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir/images`` and remove a stale ``index.csv`` (the completion marker) before writing."""
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "index.csv").unlink(missing_ok=True)
    return root


def write_index(out_dir: str | os.PathLike[str], table: pd.DataFrame) -> None:
    """Write ``out_dir/index.csv`` atomically (temp file + rename), with "\\n" line endings."""
    with atomic_path(Path(out_dir) / "index.csv") as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")


def id_width(n: int, minimum: int = 5) -> int:
    """Number of digits for zero-padded ids ``0 .. n-1``."""
    return max(minimum, len(str(max(n - 1, 0))))


def planned(
    dataset: str, kind: str, params: Mapping[str, Any], keys: Sequence[str], make: Callable[..., pd.DataFrame]
) -> pd.DataFrame:
    """A generator's ``plan_index``: ``make(**kwargs)`` with the ``keys`` of ``params`` that decide the plan
    (lists as tuples, as YAML gives them); a bad value is one InputError naming the dataset's params."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in keys}
    try:
        return make(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"datasets.{dataset}.params for kind {kind}: {exc}") from None


def no_index_files(dataset: str, params: Mapping[str, Any]) -> list[Path]:
    """A generator's ``index_files``: none, its resources/raw/<dataset>/ is the output of its own rule."""
    return []
