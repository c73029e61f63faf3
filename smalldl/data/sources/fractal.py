"""FractalDB-style formula-driven images (Kataoka et al. 2020, "Pre-training without Natural Images").

Each category is an iterated function system (IFS): 2-8 random affine maps ``(x, y) -> (a x + b y + e,
c x + d y + f)`` with parameters uniform in [-1, 1] and selection probabilities proportional to ``|ad - bc|``.
As in FractalDB, a sampled system is kept only if its attractor fills enough of the image (the *filling
rate*: the fraction of pixels of a ``FILL_GRID`` x ``FILL_GRID`` rendering that any point hits must be at
least ``min_fill``).  To keep every attractor bounded, the linear part of a map whose largest singular value
exceeds ``MAX_SIGMA`` is scaled down to it (a deviation from FractalDB, which leaves divergent systems to the
filling-rate check).

Images are rendered with the chaos game, run as many short parallel chains (vectorised numpy) started on
the category's attractor, ``n_points`` points in all, accumulated with ``np.bincount`` into a grid and
mapped to 8 bits on a log scale (white points on black).  Instances of a category perturb the maps'
parameters slightly (FractalDB's "weight" variation: every parameter jittered by a few percent and one
parameter scaled by a weight in [0.85, 1.15]) and apply a random horizontal/vertical flip, a small shift and
a small zoom, so that images of one category look alike but differ.

Category parameters depend only on ``(seed, category index)`` (not on ``image_size`` or
``n_categories``), so category ``k`` is the same fractal in every data set made with one seed.

Public entry points: :func:`generate`, :func:`category_ifs`, :func:`render_fractal`, :func:`filling_rate`,
:func:`chaos_points`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.data.sources import _draw
from smalldl.utils import derive_seed

__all__ = [
    "FILL_GRID",
    "MAX_SIGMA",
    "MIN_FILL",
    "IFS",
    "category_ifs",
    "chaos_points",
    "filling_rate",
    "generate",
    "index_files",
    "plan_index",
    "render_fractal",
    "sample_ifs",
]

MIN_FILL = 0.05
"""Default minimum filling rate of a category (fraction of the ``FILL_GRID``-square grid hit by points)."""
FILL_GRID = 128
MAX_SIGMA = 0.95
N_POINTS = 32_768
_CHAINS = 2048
_BURN_IN = 12
_MAX_TRIES = 1000
_NAME = "fractal"


@dataclass(frozen=True, eq=False)
class IFS:
    """An iterated function system: ``maps`` is ``(k, 6)`` rows ``(a, b, c, d, e, f)``, ``probs`` sum to 1."""

    maps: np.ndarray
    probs: np.ndarray
    fill: float = float("nan")  # filling rate measured when the category was accepted
    seeds: np.ndarray | None = None  # points on the attractor, to start chains from


def _contract(maps: np.ndarray) -> np.ndarray:
    """Scale the linear part of every map down so that its largest singular value is <= MAX_SIGMA."""
    out = maps.copy()
    lin = out[:, :4].reshape(-1, 2, 2)
    sigma = np.linalg.svd(lin, compute_uv=False)[:, 0]
    factor = np.minimum(1.0, MAX_SIGMA / np.maximum(sigma, 1e-12))
    out[:, :4] *= factor[:, None]
    return out


def _probs(maps: np.ndarray) -> np.ndarray | None:
    det = np.abs(maps[:, 0] * maps[:, 3] - maps[:, 1] * maps[:, 2])
    total = det.sum()
    if not np.isfinite(total) or total < 1e-6:
        return None
    return det / total


def sample_ifs(rng: np.random.Generator) -> IFS | None:
    """A random IFS as in FractalDB (2-8 maps, parameters uniform in [-1, 1]); None if degenerate."""
    k = int(rng.integers(2, 9))
    maps = _contract(rng.uniform(-1.0, 1.0, (k, 6)))
    probs = _probs(maps)
    return None if probs is None else IFS(maps, probs)


def chaos_points(
    ifs: IFS,
    rng: np.random.Generator,
    n_points: int = N_POINTS,
    start: np.ndarray | None = None,
    burn_in: int = _BURN_IN,
) -> np.ndarray:
    """``(n, 2)`` float64 points of the attractor by the chaos game, run as parallel chains.

    Chains start from ``start`` points (cycled; e.g. points already on the attractor) or uniformly in
    [-1, 1]^2, iterate ``burn_in`` discarded steps, then record every step.
    """
    chains = min(_CHAINS, n_points)
    steps = -(-n_points // chains)
    if start is None or len(start) == 0:
        pts = rng.uniform(-1.0, 1.0, (chains, 2))
        burn_in = max(burn_in, 40)
    else:
        pts = np.asarray(start, dtype=np.float64)[np.arange(chains) % len(start)].copy()
    # map choice through a 4096-entry lookup table (probabilities quantised to 1/4096; much faster)
    cum = np.cumsum(ifs.probs)
    table = np.minimum(np.searchsorted(cum / cum[-1], (np.arange(4096) + 0.5) / 4096), len(cum) - 1)
    choice = table[rng.integers(0, 4096, (burn_in + steps, chains), dtype=np.int16)]
    a, b, c, d, e, f = (ifs.maps[:, j] for j in range(6))
    x, y = pts[:, 0], pts[:, 1]
    out = np.empty((steps, chains, 2))
    for i in range(burn_in + steps):
        k = choice[i]
        x, y = a[k] * x + b[k] * y + e[k], c[k] * x + d[k] * y + f[k]
        if i >= burn_in:
            out[i - burn_in, :, 0] = x
            out[i - burn_in, :, 1] = y
    return out.reshape(-1, 2)[:n_points]


def _normalise(points: np.ndarray, margin: float = 0.05) -> tuple[np.ndarray, float]:
    """Points mapped into [margin, 1 - margin]^2 keeping the aspect ratio (robust 0.2/99.8 percentiles
    of a subsample of about 4096 points)."""
    sub = points[:: max(1, len(points) // 4096)]
    lo = np.percentile(sub, 0.2, axis=0)
    hi = np.percentile(sub, 99.8, axis=0)
    extent = float(np.max(hi - lo))
    if not np.isfinite(extent) or extent <= 1e-9:
        return np.full_like(points, 0.5), 0.0
    centre = 0.5 * (lo + hi)
    return (points - centre) * ((1.0 - 2 * margin) / extent) + 0.5, extent


def _histogram(unit_points: np.ndarray, size: int) -> np.ndarray:
    ij = np.floor(unit_points * size).astype(np.int64)
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < size) & (ij[:, 1] >= 0) & (ij[:, 1] < size)
    flat = ij[ok, 1] * size + ij[ok, 0]
    return np.bincount(flat, minlength=size * size).reshape(size, size)


def filling_rate(points: np.ndarray, grid: int = FILL_GRID) -> float:
    """Fraction of a ``grid`` x ``grid`` image hit by the (normalised) points: FractalDB's filling rate."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0 or not np.all(np.isfinite(pts)):
        return 0.0
    unit, extent = _normalise(pts)
    if extent == 0.0:
        return 0.0
    return float((_histogram(unit, grid) > 0).mean())


@lru_cache(maxsize=256)
def category_ifs(seed: int, category: int, min_fill: float = MIN_FILL) -> IFS:
    """The IFS of ``category``: the first system that passes the filling-rate check.

    Candidates are drawn from ``default_rng(derive_seed(seed, "fractal", "category", category, attempt))``
    for attempt = 0, 1, ...; the accepted one records its filling rate and 512 points of its attractor.
    """
    for attempt in range(_MAX_TRIES):
        rng = np.random.default_rng(derive_seed(seed, _NAME, "category", category, attempt))
        ifs = sample_ifs(rng)
        if ifs is None:
            continue
        pts = chaos_points(ifs, rng, 20_000)
        fill = filling_rate(pts)
        if fill >= min_fill:
            keep = pts[rng.choice(len(pts), 512, replace=False)]
            return IFS(ifs.maps, ifs.probs, fill, keep)
    raise RuntimeError(f"no IFS with filling rate >= {min_fill} found for category {category} (seed {seed})")


def _instance(ifs: IFS, rng: np.random.Generator) -> IFS:
    maps = ifs.maps * (1.0 + 0.03 * rng.standard_normal(ifs.maps.shape))
    i, j = int(rng.integers(0, maps.shape[0])), int(rng.integers(0, 6))
    maps[i, j] *= rng.uniform(0.85, 1.15)
    maps = _contract(maps)
    probs = _probs(maps)
    return IFS(maps, ifs.probs if probs is None else probs, ifs.fill, ifs.seeds)


def render_fractal(
    ifs: IFS,
    *,
    image_seed: int = 0,
    image_size: int = 128,
    n_points: int | None = None,
    variation: bool = True,
) -> np.ndarray:
    """One ``(image_size, image_size)`` uint8 instance of a category (white points on black).

    With ``variation`` the maps are perturbed and the image flipped, shifted and zoomed at random (from
    ``image_seed``); without, the category's own system is drawn centred.  ``n_points`` defaults to
    ``max(N_POINTS, 2 * image_size**2)``.
    """
    size = _draw.check_int("image_size", image_size, 32, 4096)
    if n_points is None:
        n_points = max(N_POINTS, 2 * size * size)
    rng = np.random.default_rng(image_seed)
    inst = _instance(ifs, rng) if variation else ifs
    flip_x, flip_y = rng.random(2) < 0.5 if variation else (False, False)
    shift = rng.uniform(-0.04, 0.04, 2) if variation else np.zeros(2)
    zoom = rng.uniform(0.88, 1.0) if variation else 1.0
    pts = chaos_points(inst, rng, n_points, start=ifs.seeds)
    if not np.all(np.isfinite(pts)):
        pts = chaos_points(ifs, rng, n_points, start=ifs.seeds)
    unit, _ = _normalise(pts)
    unit = (unit - 0.5) * zoom + 0.5 + shift
    if flip_x:
        unit[:, 0] = 1.0 - unit[:, 0]
    if flip_y:
        unit[:, 1] = 1.0 - unit[:, 1]
    counts = _histogram(unit, size).astype(np.float32)
    nz = counts[counts > 0]
    top = float(np.percentile(nz, 99)) if nz.size else 1.0
    img = np.log1p(counts) / math.log1p(max(top, 1.0))
    return _draw.to_uint8(np.minimum(img, 1.0) * 0.85 + 0.15 * (counts > 0))


def _render_job(job: tuple[int, int, int, float], image_size: int) -> np.ndarray:
    seed, category, image_seed, min_fill = job
    return render_fractal(category_ifs(seed, category, min_fill), image_seed=image_seed, image_size=image_size)


def generate(
    out_dir: str | Path,
    *,
    n_categories: int = 20,
    images_per_category: int = 100,
    image_size: int = 128,
    seed: int = 0,
    workers: int = 1,
    min_fill: float = MIN_FILL,
) -> pd.DataFrame:
    """Write a FractalDB-style data set under ``out_dir`` and return its index table.

    Files: ``out_dir/images/f<category>_<instance>.png`` and ``out_dir/index.csv`` (written last) with
    columns ``image_id, patient_id (= image_id), path, view ("fractal"), category`` (int).  Byte-identical
    output for the same arguments, whatever ``workers``.
    """
    n_cat = _draw.check_int("n_categories", n_categories, 1, 100_000)
    per = _draw.check_int("images_per_category", images_per_category, 1, 1_000_000)
    seed, image_size, workers = _draw.check_common(seed, image_size, workers)
    min_fill = _draw.check_float("min_fill", min_fill, 0.0, 0.9)
    wc, wi = _draw.id_width(n_cat, 3), _draw.id_width(per, 4)
    rows: list[tuple[str, int]] = []
    jobs: list[tuple[str, tuple[int, int, int, float]]] = []
    for cat in range(n_cat):
        for i in range(per):
            image_id = f"f{cat:0{wc}d}_{i:0{wi}d}"
            path = f"images/{image_id}.png"
            rows.append((image_id, cat))
            jobs.append((path, (seed, cat, derive_seed(seed, _NAME, "image", cat, i), min_fill)))
    root = _draw.prepare_out_dir(out_dir)
    _draw.render_all(_render_job, jobs, root, image_size=image_size, workers=workers, desc=f"generate {_NAME}")
    table = pd.DataFrame(
        {
            "image_id": [r[0] for r in rows],
            "patient_id": [r[0] for r in rows],
            "path": [p for p, _ in jobs],
            "view": "fractal",
            "category": np.array([r[1] for r in rows], dtype=np.int64),
        }
    )
    _draw.write_index(root, table)
    return table


def plan_index(dataset: str, params: Mapping[str, Any], seed: int) -> str:
    """Why a fractal dataset's training pool is not counted at plan time: its labels are multiclass (no
    target trains on it; the registry's interface: smalldl.data.kinds)."""
    return "a fractal dataset has multiclass labels only"


index_files = _draw.no_index_files
