"""Synthetic frontal chest radiographs: an offline stand-in for NIH ChestX-ray14.

The images are *phantoms*, not real patients: each is drawn from simple analytic shapes that follow the
anatomy of a frontal chest film, so that the workflow (index, cache, patient-level splits, training,
radiomics, figures) can run end to end without downloading 45 GB.  They are meant to be learnable with a
difficulty knob, not to be diagnostically realistic.

Anatomy (image-right = patient's left, as on a PA film): body outline and soft tissue with shoulders and
neck, humeral heads, two lungs (dark, air) with hila and radiating vessel markings, trachea, mediastinum
and spine (bright), aortic knob, heart left of centre (image right), posterior and anterior ribs,
clavicles, diaphragm domes (the right one higher) with costophrenic angles, gastric bubble, breast
shadows in women.  Patients vary in size, lung shape, heart size, brightness and contrast; images of one
patient vary mildly in positioning (shift, rotation, scale), inspiration, exposure and noise.  About 40% of
images are AP (supine/portable) films: magnified heart, poorer inspiration, higher flatter clavicles,
scapulae over the lungs, more noise.

Labels: the 14 ChestX-ray14 findings in NIH order (:data:`FINDINGS`).  Chronic findings
(:data:`CHRONIC_FINDINGS`) belong to the patient and appear in every image of that patient, at the same
place; acute ones are drawn per image.  Co-occurrence follows a small Bayesian network of odds ratios
(:data:`ODDS_RATIOS`, e.g. Effusion with Cardiomegaly/Edema, Pneumonia with Consolidation/Infiltration)
whose intercepts are calibrated exactly (by enumerating all 2**14 label states) so that the per-image
marginal prevalences equal :data:`DEFAULT_PREVALENCE` (close to NIH) or the caller's overrides.

Each finding is a localized pattern (see :func:`render_chest`); ``difficulty`` in [0, 1] scales finding
contrast and size down and noise up.

Public entry points: :func:`generate` (files + index), :func:`plan` / :func:`sample_labels` (labels without
rendering), :func:`render_chest` and :func:`chest_regions` (one image, with findings toggled freely),
:class:`LabelModel`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.data.sources import _draw
from smalldl.data.sources._draw import F32, ramp, smooth_noise, smoothstep
from smalldl.data.sources.nih import LABELS as NIH_LABELS
from smalldl.utils import derive_seed

__all__ = [
    "CHRONIC_FINDINGS",
    "DEFAULT_PREVALENCE",
    "FINDINGS",
    "ODDS_RATIOS",
    "VIEWS",
    "ChestAnatomy",
    "ChestImageSpec",
    "LabelModel",
    "chest_regions",
    "draw_anatomy",
    "generate",
    "index_files",
    "plan",
    "plan_index",
    "render_chest",
    "sample_labels",
]

FINDINGS: tuple[str, ...] = NIH_LABELS
"""The 14 ChestX-ray14 labels in the NIH standard order (also the order of the label columns)."""

CHRONIC_FINDINGS: frozenset[str] = frozenset(
    {"Cardiomegaly", "Emphysema", "Fibrosis", "Hernia", "Pleural_Thickening", "Mass"}
)
"""Patient-level findings: present in all or none of a patient's images."""

DEFAULT_PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.103,
    "Cardiomegaly": 0.025,
    "Effusion": 0.119,
    "Infiltration": 0.177,
    "Mass": 0.052,
    "Nodule": 0.056,
    "Pneumonia": 0.013,
    "Pneumothorax": 0.047,
    "Consolidation": 0.042,
    "Edema": 0.021,
    "Emphysema": 0.022,
    "Fibrosis": 0.015,
    "Pleural_Thickening": 0.030,
    "Hernia": 0.002,
}
"""Per-image prevalences, close to those of NIH ChestX-ray14."""

ODDS_RATIOS: dict[str, dict[str, float]] = {
    "Pleural_Thickening": {"Fibrosis": 4.0},
    "Edema": {"Cardiomegaly": 6.0},
    "Effusion": {"Cardiomegaly": 5.0, "Edema": 5.0, "Mass": 2.0},
    "Atelectasis": {"Effusion": 4.0},
    "Infiltration": {"Effusion": 2.0, "Atelectasis": 2.0, "Edema": 2.0},
    "Consolidation": {"Atelectasis": 3.0, "Infiltration": 2.0},
    "Pneumonia": {"Consolidation": 6.0, "Infiltration": 5.0},
    "Nodule": {"Mass": 3.0},
    "Pneumothorax": {"Emphysema": 4.0},
}
"""Odds ratios: ``ODDS_RATIOS[child][parent]`` multiplies the odds of child when parent is present."""

# topological order of the network: chronic findings (parents only chronic) first, then acute ones
_ORDER: tuple[str, ...] = (
    "Cardiomegaly",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Mass",
    "Hernia",
    "Edema",
    "Effusion",
    "Atelectasis",
    "Infiltration",
    "Consolidation",
    "Pneumonia",
    "Nodule",
    "Pneumothorax",
)

VIEWS: tuple[str, ...] = ("PA", "AP")
AP_FRACTION = 0.4
_NAME = "synthetic_chest"


# ====================================================================================================
# labels
# ====================================================================================================


def _check_prevalence(prevalence: Mapping[str, float] | None) -> dict[str, float]:
    merged = dict(DEFAULT_PREVALENCE)
    if prevalence is None:
        return merged
    if not isinstance(prevalence, Mapping):
        raise ValueError(f"prevalence must be a mapping of finding name to probability, got {prevalence!r}")
    for name, value in prevalence.items():
        if name not in DEFAULT_PREVALENCE:
            raise ValueError(f"prevalence: unknown finding {name!r}; known findings: {', '.join(FINDINGS)}")
        merged[name] = _draw.check_float(f"prevalence[{name!r}]", value, 0.0, 1.0)
    return merged


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


class LabelModel:
    """Bayesian network over the 14 findings with exactly calibrated per-image marginals.

    ``P(f | parents) = sigmoid(b_f + sum_g log(OR[f][g]) * x_g)``; each intercept ``b_f`` is solved (in
    topological order, by bisection on the exact marginal obtained by enumerating all states of the
    earlier findings) so that ``P(f) = prevalence[f]``.
    """

    def __init__(self, prevalence: Mapping[str, float] | None = None) -> None:
        self.prevalence = _check_prevalence(prevalence)
        self.intercepts: dict[str, float] = {}
        self.marginals: dict[str, float] = {}
        self._calibrate()

    def _calibrate(self) -> None:
        joint = np.ones(1, dtype=np.float64)
        bits: list[np.ndarray] = []  # bits[j][state] of the j-th finding in _ORDER
        for k, name in enumerate(_ORDER):
            logit_parents = np.zeros(2**k)
            for parent, ratio in ODDS_RATIOS.get(name, {}).items():
                logit_parents += math.log(ratio) * bits[_ORDER.index(parent)]
            target = self.prevalence[name]
            if target <= 0.0:
                b, q = -math.inf, np.zeros(2**k)
            elif target >= 1.0:
                b, q = math.inf, np.ones(2**k)
            else:
                lo, hi = -60.0, 60.0
                for _ in range(200):
                    mid = 0.5 * (lo + hi)
                    if float(joint @ _sigmoid(mid + logit_parents)) < target:
                        lo = mid
                    else:
                        hi = mid
                b = 0.5 * (lo + hi)
                q = _sigmoid(b + logit_parents)
            self.intercepts[name] = b
            joint = np.concatenate([joint * (1.0 - q), joint * q])
            bits = [np.concatenate([bj, bj]) for bj in bits]
            bits.append((np.arange(2 ** (k + 1)) >= 2**k).astype(np.float64))
        for j, name in enumerate(_ORDER):
            self.marginals[name] = float(joint @ bits[j])

    def sample(self, uniforms: np.ndarray) -> np.ndarray:
        """Labels (``int8``, columns in :data:`FINDINGS` order) from uniforms of the same shape.

        Rows whose chronic-finding uniforms are equal get equal chronic labels (chronic findings have only
        chronic parents), which is how patient-level findings stay constant within a patient.
        """
        u = np.asarray(uniforms, dtype=np.float64)
        if u.ndim != 2 or u.shape[1] != len(FINDINGS):
            raise ValueError(f"uniforms must have shape (n, {len(FINDINGS)}), got {u.shape}")
        x = np.zeros(u.shape, dtype=np.int8)
        col = {name: i for i, name in enumerate(FINDINGS)}
        for name in _ORDER:
            b = self.intercepts[name]
            if b == -math.inf:
                continue
            if b == math.inf:
                x[:, col[name]] = 1
                continue
            z = np.full(u.shape[0], b)
            for parent, ratio in ODDS_RATIOS.get(name, {}).items():
                z += math.log(ratio) * x[:, col[parent]]
            x[:, col[name]] = u[:, col[name]] < _sigmoid(z)
        return x


# ====================================================================================================
# patients and images
# ====================================================================================================


@dataclass(frozen=True)
class ChestAnatomy:
    """Patient-level anatomy of a phantom (normalised image coordinates, see ``_draw``)."""

    patient_seed: int
    sex: str
    age: int
    thorax_w: float  # |x| of the lateral lung margins (inner chest wall)
    medial_w: float  # |x| of the medial lung margins (mediastinum half-width)
    lung_top: float  # y of the lung apices
    cp_y: float  # y of the left costophrenic angle
    right_rise: float  # the right hemidiaphragm (image left) sits this much higher
    dome: float  # height of the diaphragm domes above the costophrenic angles
    ctr: float  # cardiothoracic ratio (normal: < 0.5)
    heart_tilt: float  # radians; the long axis of the heart points down to image right
    body_w: float  # half-width of the body outline
    tissue: float  # soft-tissue density
    air: float  # lung air contrast
    brightness: float
    contrast: float
    rib_phase: float
    rib_spacing: float
    clavicle_y: float


def draw_anatomy(rng: np.random.Generator, sex: str = "M", age: int = 50, patient_seed: int = 0) -> ChestAnatomy:
    """Draw a random patient anatomy (all fields within plausible ranges)."""
    male = sex == "M"
    size = 1.0 if male else 0.96
    older = min(max((age - 40) / 50.0, 0.0), 1.0)
    return ChestAnatomy(
        patient_seed=int(patient_seed),
        sex=sex,
        age=int(age),
        thorax_w=float(rng.uniform(0.68, 0.78) * size),
        medial_w=float(rng.uniform(0.075, 0.1)),
        lung_top=float(rng.uniform(-0.76, -0.66)),
        cp_y=float(rng.uniform(0.40, 0.52)),
        right_rise=float(rng.uniform(0.02, 0.06)),
        dome=float(rng.uniform(0.11, 0.18)),
        ctr=float(rng.uniform(0.39, 0.46)),
        heart_tilt=float(rng.uniform(0.30, 0.55)),
        body_w=float(rng.uniform(0.88, 0.98) * size),
        tissue=float(rng.uniform(0.52, 0.6)),
        air=float(rng.uniform(0.34, 0.42) * (1.0 + 0.05 * older)),
        brightness=float(rng.uniform(0.02, 0.07)),
        contrast=float(rng.uniform(1.12, 1.3)),
        rib_phase=float(rng.uniform(0.0, 1.0)),
        rib_spacing=float(rng.uniform(0.125, 0.145)),
        clavicle_y=float(rng.uniform(-0.68, -0.6)),
    )


@dataclass(frozen=True)
class ChestImageSpec:
    """Everything needed to render one image and write its index row."""

    image_id: str
    patient_id: str
    path: str
    view: str
    age: int
    sex: str
    labels: tuple[int, ...]  # FINDINGS order
    anatomy: ChestAnatomy
    image_seed: int

    @property
    def findings(self) -> tuple[str, ...]:
        """Names of the findings present in this image."""
        return tuple(name for name, v in zip(FINDINGS, self.labels, strict=True) if v)


def _check_plan_args(
    n_patients: int, images_per_patient: int | Sequence[int], seed: int
) -> tuple[int, tuple[int, int], int]:
    n = _draw.check_int("n_patients", n_patients, 1)
    ipp = _draw.check_range("images_per_patient", images_per_patient, 1)
    if ipp[1] > 1000:
        raise ValueError(f"images_per_patient must be at most 1000 per patient, got {images_per_patient!r}")
    return n, ipp, _draw.check_int("seed", seed, 0)


def plan(
    n_patients: int = 2500,
    images_per_patient: int | Sequence[int] = (1, 4),
    prevalence: Mapping[str, float] | None = None,
    seed: int = 0,
) -> list[ChestImageSpec]:
    """Draw patients, images and labels (no rendering): deterministic in the arguments.

    Patient ``p`` uses the generator ``default_rng(derive_seed(seed, "synthetic_chest", "patient", p))``
    for its image count, age, sex, anatomy, chronic labels and per-image acute labels and views; image
    ``k`` of patient ``p`` is rendered from ``derive_seed(seed, "synthetic_chest", "image", p, k)``.
    """
    n, (lo, hi), seed = _check_plan_args(n_patients, images_per_patient, seed)
    model = LabelModel(prevalence)
    chronic = np.array([name in CHRONIC_FINDINGS for name in FINDINGS])
    width = _draw.id_width(n)
    rows: list[tuple[int, int, str, int, ChestAnatomy, str]] = []
    uniforms: list[np.ndarray] = []
    for p in range(n):
        rng = np.random.default_rng(derive_seed(seed, _NAME, "patient", p))
        k = int(rng.integers(lo, hi + 1))
        sex = "M" if rng.random() < 0.56 else "F"
        age = int(np.clip(round(rng.normal(47.0, 17.0)), 1, 95))
        anatomy = draw_anatomy(rng, sex, age, derive_seed(seed, _NAME, "anatomy", p))
        u = rng.random((k, len(FINDINGS)))
        u[:, chronic] = rng.random(int(chronic.sum()))
        views = rng.random(k) < AP_FRACTION
        uniforms.append(u)
        for j in range(k):
            rows.append((p, j, "AP" if views[j] else "PA", age, anatomy, sex))
    labels = model.sample(np.concatenate(uniforms))
    specs: list[ChestImageSpec] = []
    for (p, j, view, age, anatomy, sex), lab in zip(rows, labels, strict=True):
        image_id = f"c{p:0{width}d}_{j + 1:02d}"
        specs.append(
            ChestImageSpec(
                image_id=image_id,
                patient_id=f"P{p:0{width}d}",
                path=f"images/{image_id}.png",
                view=view,
                age=age,
                sex=sex,
                labels=tuple(int(v) for v in lab),
                anatomy=anatomy,
                image_seed=derive_seed(seed, _NAME, "image", p, j),
            )
        )
    return specs


def _table(specs: Sequence[ChestImageSpec]) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "image_id": [s.image_id for s in specs],
            "patient_id": [s.patient_id for s in specs],
            "path": [s.path for s in specs],
            "view": [s.view for s in specs],
            "age": np.array([s.age for s in specs], dtype=np.int64),
            "sex": [s.sex for s in specs],
        }
    )
    labels = np.array([s.labels for s in specs], dtype=np.int64).reshape(len(specs), len(FINDINGS))
    for i, name in enumerate(FINDINGS):
        table[name] = labels[:, i]
    return table


def sample_labels(
    n_patients: int = 2500,
    images_per_patient: int | Sequence[int] = (1, 4),
    prevalence: Mapping[str, float] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The index table that :func:`generate` would write, without rendering any image."""
    return _table(plan(n_patients, images_per_patient, prevalence, seed))


#: The params that decide the plan (patients, images, labels); the others change only how images look.
PLAN_PARAMS = ("n_patients", "images_per_patient", "prevalence")


def plan_index(dataset: str, params: Mapping[str, Any], seed: int) -> pd.DataFrame:
    """The index :func:`generate` writes for ``params`` and the dataset's ``seed``, without rendering
    (the registry's interface: smalldl.data.kinds)."""
    return _draw.planned(dataset, _NAME, params, PLAN_PARAMS, lambda **kw: _table(plan(seed=seed, **kw)))


index_files = _draw.no_index_files


# ====================================================================================================
# rendering
# ====================================================================================================


class _Frame:
    """Anatomy-frame coordinates ``(xa, ya)`` of every pixel and windows (bounding boxes) onto them.

    The anatomy frame is the image frame undone by the image-level positioning (shift, rotation, scale).
    Drawing a small structure only inside its window keeps the cost proportional to its area.
    """

    def __init__(self, size: int, shift_x: float, shift_y: float, angle: float, scale: float) -> None:
        x, y = _draw.grid(size)
        self.size = size
        self.c, self.s = math.cos(angle), math.sin(angle)
        self.scale = scale
        self.shift = (shift_x, shift_y)
        xs, ys = x - F32(shift_x), y - F32(shift_y)
        self.xa = (F32(self.c) * xs + F32(self.s) * ys) * F32(1.0 / scale)
        self.ya = (F32(-self.s) * xs + F32(self.c) * ys) * F32(1.0 / scale)
        self.e = _draw.pixel(size) / scale  # one pixel, in anatomy units

    def win(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Pixel slices covering the anatomy-frame box [x0, x1] x [y0, y1] (plus one pixel)."""
        xs, ys = [], []
        for ax_, ay_ in ((x0, y0), (x0, y1), (x1, y0), (x1, y1)):
            xs.append(self.scale * (self.c * ax_ - self.s * ay_) + self.shift[0])
            ys.append(self.scale * (self.s * ax_ + self.c * ay_) + self.shift[1])
        half = self.size / 2.0
        c0 = min(self.size, max(0, math.floor((min(xs) + 1.0) * half) - 1))
        c1 = min(self.size, max(0, math.ceil((max(xs) + 1.0) * half) + 1))
        r0 = min(self.size, max(0, math.floor((min(ys) + 1.0) * half) - 1))
        r1 = min(self.size, max(0, math.ceil((max(ys) + 1.0) * half) + 1))
        return slice(r0, r1), slice(c0, c1)

    def around(self, cx: float, cy: float, rx: float, ry: float | None = None) -> tuple[slice, slice]:
        """Window around ``(cx, cy)`` with half-sizes ``rx``, ``ry``."""
        ry = rx if ry is None else ry
        return self.win(cx - rx, cx + rx, cy - ry, cy + ry)


@dataclass
class _Lung:
    """One lung; the arrays cover only its window ``sl`` of the image."""

    side: int  # -1: image left (patient right), +1: image right (patient left)
    w: float
    m: float
    top: float
    cp: float
    dome: float
    sl: tuple[slice, slice]
    x: np.ndarray  # anatomy-frame coordinates of the window
    y: np.ndarray
    mask: np.ndarray
    d: np.ndarray  # signed distance to the lung margin (> 0 inside), normalised units
    lx: np.ndarray  # 0 medial .. 1 lateral
    hn: np.ndarray  # 0 apex .. 1 costophrenic angle
    d_wall: np.ndarray  # distance ignoring the diaphragm (for fluid that hides the dome)

    def point(self, lx: float, hn: float) -> tuple[float, float]:
        """Anatomy-frame (x, y) of lung coordinates (lx, hn), moved inside the lung if needed.

        ``lx`` is taken as a fraction of the lung width available at height ``hn``, and ``hn`` is kept
        above the diaphragm.
        """
        lat, med = (float(v) for v in _lung_limits(hn))
        lxx = med + 0.04 + lx * max(lat - med - 0.08, 0.0)
        y = self.top + hn * (self.cp - self.top)
        y = min(y, float(_diaphragm(lxx, self.cp, self.dome)) - 0.04)
        return self.side * (self.m + lxx * (self.w - self.m)), y

    @property
    def span(self) -> float:
        return self.cp - self.top


def _diaphragm(lx: np.ndarray | float, cp: np.ndarray | float, dome: float) -> np.ndarray:
    """y of a hemidiaphragm: medial end half-way up, peak at lx = 0.4, lateral end at the CP angle."""
    lxa = np.clip(np.asarray(lx, dtype=F32), 0.0, 1.0)
    t = lxa - F32(0.4)
    # inner (lx < 0.4): 1 - 0.5 (t / 0.4)^2 ; outer: 1 - (t / 0.6)^2
    k = np.where(t < 0, F32(0.5 / 0.16), F32(1.0 / 0.36))
    return cp - dome * (1.0 - k * t * t)


def _lung(fr: _Frame, side: int, w: float, m: float, top: float, cp: float, dome: float) -> _Lung:
    x0, x1 = sorted((side * (m - 0.03), side * (w + 0.03)))
    sl = fr.win(x0, x1, top - 0.03, cp + 0.06)
    xa, ya = fr.xa[sl], fr.ya[sl]
    width = w - m
    span = cp - top
    lx = (side * xa - m) * (1.0 / width)
    hn = (ya - top) * (1.0 / span)
    lat_lim, med_lim = _lung_limits(hn)
    d_med = (lx - med_lim) * width
    d_lat = (lat_lim - lx) * (0.75 * width)
    d_wall = np.minimum(np.minimum(d_med, d_lat), ya - top)
    d = np.minimum(d_wall, _diaphragm(lx, cp, dome) - ya)
    return _Lung(side, w, m, top, cp, dome, sl, xa, ya, ramp(d, 2 * fr.e), d, lx, hn, d_wall)


def _lung_limits(hn: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Lateral and medial margins (in lx units) at height ``hn``: a narrow rounded apex widening down."""
    h = np.asarray(hn, dtype=F32)
    lat = 1.0 - 0.72 * (1.0 - np.clip(h * 2.0, 0.0, 1.0)) ** 2
    med = 0.16 * (1.0 - np.clip(h * (1 / 0.3), 0.0, 1.0)) ** 2
    return lat, med


_VBINS = 720


def _vessel_table(rng: np.random.Generator, k: int) -> np.ndarray:
    """Angular distance (radians) from each of ``_VBINS`` angle bins to the nearest of ``k`` vessel axes."""
    centres = rng.uniform(-math.pi, math.pi, k)
    bins = (np.arange(_VBINS) + 0.5) * (2 * math.pi / _VBINS) - math.pi
    diff = np.abs(bins[:, None] - centres[None, :])
    diff = np.minimum(diff, 2 * math.pi - diff)
    return diff.min(axis=1).astype(F32)


@lru_cache(maxsize=16)
def _vessels(patient_seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The patient's vessel pattern: inner/outer angle tables per lung and wobble phases."""
    vrng = np.random.default_rng(derive_seed(patient_seed, "vessels"))
    tables = [_vessel_table(vrng, k) for k in (9, 22, 9, 22)]
    return tables, vrng.uniform(0.0, 6.3, 2).astype(F32)


def _frac(x: np.ndarray) -> np.ndarray:
    """Fractional part (much faster than ``np.mod(x, 1)``)."""
    return x - np.floor(x)


def _finding_rng(anatomy: ChestAnatomy, image_seed: int, name: str) -> np.random.Generator:
    base = anatomy.patient_seed if name in CHRONIC_FINDINGS else image_seed
    return np.random.default_rng(derive_seed(base, "finding", name))


def _blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, e: float) -> np.ndarray:
    """Soft ellipse: 1 inside, ramp of width ~e at the border, with a rounded (spherical) profile."""
    q = ((x - cx) * (1.0 / rx)) ** 2 + ((y - cy) * (1.0 / ry)) ** 2
    return np.sqrt(np.clip(1.0 - q, 0.0, 1.0)) * ramp((1.0 - np.sqrt(q)) * min(rx, ry), e)


# ---- finding painters (each draws only from its own generator) ---------------------------------------


@dataclass
class _Ctx:
    """What the finding painters read (geometry) and write (the density modifiers, in place)."""

    fr: _Frame
    lungs: dict[int, _Lung]
    hila: dict[int, tuple[float, float]]
    s: float  # contrast factor
    z: float  # size factor
    opac: np.ndarray  # fraction of lung air replaced by water density
    extra: np.ndarray  # extra air (darker)
    add: np.ndarray  # additive density
    vg: np.ndarray  # vessel-marking gain
    atel_side: int

    @property
    def e(self) -> float:
        return self.fr.e

    def noise(self, g: np.random.Generator, cells: int) -> np.ndarray:
        return smooth_noise(g, self.fr.size, cells)


def _pick_side(g: np.random.Generator) -> int:
    return -1 if g.random() < 0.5 else 1


def _effusion(g: np.random.Generator, c: _Ctx) -> None:
    sides = (-1, 1) if g.random() < 0.25 else (_pick_side(g),)
    for side in sides:
        L = c.lungs[side]
        h = c.z * g.uniform(0.16, 0.3)
        surface = 1.0 - h * (0.45 + 0.55 * np.clip(L.lx, 0.0, 1.0) ** 1.5)
        fluid = ramp(L.d_wall, 2 * c.e) * ramp((L.hn - surface) * L.span, 3 * c.e) * (L.y < L.cp + 0.04)
        c.opac[L.sl] += c.s * 1.0 * fluid
        c.add[L.sl] += c.s * 0.05 * fluid * L.mask


def _nodule(g: np.random.Generator, c: _Ctx) -> None:
    L = c.lungs[_pick_side(g)]
    cx, cy = L.point(g.uniform(0.2, 0.85), g.uniform(0.15, 0.75))
    r = c.z * g.uniform(0.018, 0.026)
    sl = c.fr.around(cx, cy, r + 3 * c.e)
    blob = _blob(c.fr.xa[sl], c.fr.ya[sl], cx, cy, r, r, c.e)
    c.opac[sl] += c.s * 1.0 * blob
    c.add[sl] += c.s * 0.06 * blob


def _mass(g: np.random.Generator, c: _Ctx) -> None:
    L = c.lungs[_pick_side(g)]
    cx, cy = L.point(g.uniform(0.3, 0.75), g.uniform(0.25, 0.7))
    r = c.z * g.uniform(0.065, 0.11)
    ph = g.uniform(0, 2 * math.pi, 2)
    sl = c.fr.around(cx, cy, 1.2 * r + 3 * c.e)
    dx, dy = c.fr.xa[sl] - cx, c.fr.ya[sl] - cy
    th = np.arctan2(dy, dx)
    rr = r * (1.0 + 0.1 * np.sin(3 * th + ph[0]) + 0.07 * np.sin(5 * th + ph[1]))
    q = np.sqrt(dx * dx + dy * dy) / rr
    blob = np.sqrt(np.clip(1.0 - q * q, 0.0, 1.0)) ** 0.5 * ramp((1.0 - q) * r, c.e)
    c.opac[sl] += c.s * 0.95 * blob
    c.add[sl] += c.s * 0.04 * blob


def _consolidation(g: np.random.Generator, c: _Ctx) -> None:
    L = c.lungs[_pick_side(g)]
    zones = ((0.1, 0.35), (0.4, 0.6), (0.65, 0.85))  # upper, middle, lower zone
    cx, cy = L.point(g.uniform(0.35, 0.85), g.uniform(*zones[int(g.integers(0, 3))]))
    r = c.z * g.uniform(0.12, 0.2)
    rr = np.sqrt(((L.x - cx) * (1 / 1.2)) ** 2 + (L.y - cy) ** 2)
    noise = c.noise(g, 10)[L.sl]
    patch = smoothstep(0.25, -0.25, rr / r - 1.0 + 0.35 * noise) * L.mask
    bronch = np.exp(-((c.noise(g, 14)[L.sl] * (1 / 0.08)) ** 2))  # air bronchograms
    c.opac[L.sl] += c.s * 0.9 * patch * (1.0 - 0.3 * bronch)


def _zone(L: _Lung, h0: float, h1: float) -> np.ndarray:
    return smoothstep(h0 - 0.08, h0 + 0.04, L.hn) * (1.0 - smoothstep(h1 - 0.04, h1 + 0.08, L.hn))


def _infiltration(g: np.random.Generator, c: _Ctx) -> None:
    sides = (-1, 1) if g.random() < 0.35 else (_pick_side(g),)
    noise = c.noise(g, 14)
    h0 = g.uniform(0.0, 0.5)
    for side in sides:
        L = c.lungs[side]
        patch = smoothstep(-0.3, 0.9, noise[L.sl]) * _zone(L, h0, h0 + 0.5 * (0.6 + 0.4 * c.z)) * L.mask
        c.opac[L.sl] += c.s * 0.42 * patch


def _pneumonia(g: np.random.Generator, c: _Ctx) -> None:
    L = c.lungs[_pick_side(g)]
    cx, cy = L.point(g.uniform(0.35, 0.75), g.uniform(0.45, 0.85))
    r = c.z * g.uniform(0.09, 0.14)
    rr = np.sqrt((L.x - cx) ** 2 + (L.y - cy) ** 2)
    noise = c.noise(g, 12)[L.sl]
    core = smoothstep(-0.9, 0.3, noise - 2.2 * (rr / r - 1.0)) * (rr < 1.6 * r)
    halo = np.exp(-((rr * (1.0 / (2.3 * r))) ** 2))
    c.opac[L.sl] += c.s * L.mask * (0.85 * core + 0.3 * halo)


def _atelectasis(g: np.random.Generator, c: _Ctx) -> None:
    L = c.lungs[c.atel_side]  # side and diaphragm raise were drawn with the geometry
    hc = g.uniform(0.62, 0.82)
    tilt = g.uniform(-0.25, 0.25)
    thick = c.z * g.uniform(0.025, 0.045)
    cx, cy = L.point(0.55, hc)
    dist = np.abs((L.y - cy) - tilt * L.side * (L.x - cx))
    band = ramp(thick - dist, 2 * c.e) * smoothstep(0.1, 0.3, L.lx) * (1.0 - smoothstep(0.85, 0.98, L.lx))
    wedge = smoothstep(0.75, 1.0, L.hn) * (1.0 - smoothstep(0.0, 0.45, L.lx))  # medial basal collapse
    c.opac[L.sl] += c.s * L.mask * (0.9 * band + 0.5 * wedge)


def _pneumothorax(g: np.random.Generator, c: _Ctx) -> None:
    L = c.lungs[_pick_side(g)]
    depth = c.z * g.uniform(0.05, 0.1)
    low = g.uniform(0.45, 0.75)  # how far down the lateral margin the air extends
    where = (1.0 - smoothstep(low - 0.1, low + 0.1, L.hn)) * L.mask
    rim = ramp(depth - L.d, 2 * c.e) * where
    c.extra[L.sl] += c.s * 0.4 * rim
    c.vg[L.sl] *= 1.0 - rim
    line = np.exp(-(((L.d - depth) * (1.0 / (1.2 * c.e))) ** 2)) * where
    c.add[L.sl] += c.s * 0.12 * line


def _edema(g: np.random.Generator, c: _Ctx) -> None:
    noise = c.noise(g, 10)
    kphase = g.uniform(0.0, 1.0)
    for side, L in c.lungs.items():
        hx, hy = c.hila[side]
        r = np.sqrt(((L.x - hx) * (1 / 1.4)) ** 2 + (L.y - hy) ** 2)
        haze = np.exp(-((r * (1.0 / (0.24 * (0.7 + 0.3 * c.z)))) ** 2)) * (0.8 + 0.2 * noise[L.sl])
        kerley = np.exp(-(((_frac(L.y * F32(1.0 / 0.04) + kphase) - 0.5) * (1 / 0.12)) ** 2))
        kerley *= smoothstep(0.7, 0.9, L.lx) * smoothstep(0.55, 0.75, L.hn)
        c.opac[L.sl] += c.s * L.mask * (0.55 * haze + 0.45 * kerley)
        c.vg[L.sl] += 0.3 * c.s * L.mask  # vascular congestion


def _fibrosis(g: np.random.Generator, c: _Ctx) -> None:
    n1 = c.noise(g, 16)
    n2 = c.noise(g, 22)
    for L in c.lungs.values():
        net = np.maximum(np.exp(-((n1[L.sl] * (1 / 0.22)) ** 2)), np.exp(-((n2[L.sl] * (1 / 0.22)) ** 2)))
        where = (1.0 - smoothstep(0.35, 0.75, L.hn)) * (0.4 + 0.6 * smoothstep(0.3, 0.8, L.lx))
        c.opac[L.sl] += c.s * 0.55 * net * where * L.mask


def _pleural_thickening(g: np.random.Generator, c: _Ctx) -> None:
    sides = (-1, 1) if g.random() < 0.3 else (_pick_side(g),)
    noise = c.noise(g, 8)
    apex_only = g.random() < 0.4
    for side in sides:
        L = c.lungs[side]
        thick = c.z * (0.045 + 0.012 * noise[L.sl]) * (1.0 + 0.4 * (L.hn < 0.2).astype(F32))
        if apex_only:
            where = 1.0 - smoothstep(0.2, 0.3, L.hn)
        else:
            where = smoothstep(0.35, 0.6, L.lx) * (L.hn < 0.95)
        band = ramp(thick - L.d, 2 * c.e) * ramp(L.d + 2 * c.e, 2 * c.e) * where
        c.opac[L.sl] += c.s * 1.0 * band
        c.add[L.sl] += c.s * 0.08 * band


def _hernia(g: np.random.Generator, c: _Ctx) -> None:
    L = c.lungs[1]
    base = float(_diaphragm(0.2, L.cp, L.dome))
    r = c.z * g.uniform(0.09, 0.13)
    cx, cy = g.uniform(0.0, 0.07), base - 0.4 * r
    sl = c.fr.around(cx, cy, r + 3 * c.e)
    x, y = c.fr.xa[sl], c.fr.ya[sl]
    wall = _blob(x, y, cx, cy, r, 0.9 * r, c.e)
    inner = _blob(x, y, cx, cy, 0.82 * r, 0.72 * r, c.e)
    level = cy + g.uniform(-0.25, 0.3) * r  # air-fluid level
    air_part = inner * ramp(level - y, c.e) * float(g.random() < 0.8)
    c.add[sl] += c.s * (0.07 * wall - 0.28 * air_part)


def _emphysema(g: np.random.Generator, c: _Ctx) -> None:
    """Bullae; the hyperinflation, darker lungs and fewer markings are drawn with the geometry."""
    for _ in range(int(g.integers(1, 3))):
        L = c.lungs[_pick_side(g)]
        cx, cy = L.point(g.uniform(0.3, 0.85), g.uniform(0.1, 0.4))
        r = c.z * g.uniform(0.06, 0.1)
        b = ramp(r - np.sqrt((L.x - cx) ** 2 + (L.y - cy) ** 2), 5 * c.e) * L.mask
        c.extra[L.sl] += c.s * 0.12 * b
        c.vg[L.sl] *= 1.0 - b


_FINDING_DRAW = {
    "Atelectasis": _atelectasis,
    "Effusion": _effusion,
    "Infiltration": _infiltration,
    "Mass": _mass,
    "Nodule": _nodule,
    "Pneumonia": _pneumonia,
    "Pneumothorax": _pneumothorax,
    "Consolidation": _consolidation,
    "Edema": _edema,
    "Emphysema": _emphysema,
    "Fibrosis": _fibrosis,
    "Pleural_Thickening": _pleural_thickening,
    "Hernia": _hernia,
}


def _render(
    anatomy: ChestAnatomy,
    findings: Collection[str],
    view: str,
    image_seed: int,
    size: int,
    difficulty: float,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Intensity image (float32, roughly [0, 1], not clipped) and region masks."""
    A = anatomy
    present = frozenset(findings)
    unknown = present - set(FINDINGS)
    if unknown:
        raise ValueError(f"findings: unknown finding(s) {sorted(unknown)}")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    ap = view == "AP"
    strength = 1.0 - 0.62 * difficulty  # contrast of findings
    zoom = 1.0 - 0.3 * difficulty  # size of findings

    # ---- image-level randomness: always drawn in the same order, whatever the findings ----------------
    rng = np.random.default_rng(image_seed)
    shift_x, shift_y = (float(v) for v in rng.uniform(-0.035, 0.035, 2))
    angle = rng.uniform(-0.05, 0.05)
    scale = rng.uniform(0.95, 1.04) * (1.03 if ap else 1.0)
    inspiration = rng.uniform(-0.03, 0.03) - (0.05 if ap else 0.0)
    exposure = rng.uniform(-0.04, 0.04)
    gain = rng.uniform(0.93, 1.07)
    gamma = rng.uniform(0.9, 1.1)
    noise_sd = rng.uniform(0.012, 0.02) * (1.3 if ap else 1.0) * (1.0 + 1.1 * difficulty)
    grain = _draw.grain(rng, size, 2)
    mottle = smooth_noise(rng, size, 6)
    texture = smooth_noise(rng, size, 20)
    vessel_tables, vessel_phase = _vessels(A.patient_seed)

    frng = {name: _finding_rng(A, image_seed, name) for name in FINDINGS if name in present}

    # ---- geometry (findings that change the anatomy) --------------------------------------------------
    fr = _Frame(size, shift_x, shift_y, angle, scale)
    xa, ya, e = fr.xa, fr.ya, fr.e
    w = A.thorax_w
    m = A.medial_w
    top = A.lung_top
    cp_l = A.cp_y + inspiration
    dome = A.dome
    ctr = A.ctr * (1.08 if ap else 1.0)
    air = A.air
    vessel_gain = 1.0
    if "Emphysema" in present:
        g = frng["Emphysema"]
        k = strength * g.uniform(0.8, 1.0)
        w += 0.035 * k
        top -= 0.03 * k
        cp_l += 0.09 * k
        dome *= 1.0 - 0.7 * k
        ctr *= 1.0 - 0.1 * k
        air *= 1.0 + 0.3 * k
        vessel_gain = 1.0 - 0.65 * k
    if "Cardiomegaly" in present:
        g = frng["Cardiomegaly"]
        ctr = max(ctr, 0.52 + (0.04 + 0.10 * g.random()) * (1.0 - 0.7 * difficulty))
        if ap:
            ctr *= 1.04
    cp = {-1: cp_l - A.right_rise, 1: cp_l}
    atel_side = 0
    if "Atelectasis" in present:
        g = frng["Atelectasis"]
        atel_side = -1 if g.random() < 0.5 else 1
        cp[atel_side] -= (0.06 + 0.04 * g.random()) * strength
    cp_low = max(cp.values())

    lungs = {side: _lung(fr, side, w, m, top, cp[side], dome) for side in (-1, 1)}
    ax = np.abs(xa)
    # height of the diaphragm under every pixel (the medial ends meet across the midline)
    cpx = F32(cp[1]) + F32(cp[-1] - cp[1]) * (xa < 0)
    below = ramp(ya - _diaphragm((ax - m) * (1.0 / (w - m)), cpx, dome), 2 * e)

    def add_to(target: np.ndarray, sl: tuple[slice, slice], values: np.ndarray) -> None:
        target[sl] += values

    # ---- heart ----------------------------------------------------------------------------------------
    heart_w = ctr * 2.0 * w  # horizontal extent
    hb = 0.23
    tilt = A.heart_tilt
    ha = math.sqrt(max((heart_w / 2.0) ** 2 - (hb * math.sin(tilt)) ** 2, 0.01) / math.cos(tilt) ** 2)
    hcx = 0.2 * heart_w
    # the lower half is stretched (hidden under the diaphragm); rows keep their width, so the widest row
    # (the apex, image right) is placed just above the left hemidiaphragm and the CTR is what one measures
    stretch = 1.8
    apex_dy = (ha * ha - hb * hb) * math.sin(tilt) * math.cos(tilt) / (heart_w / 2.0) * stretch
    x_apex = hcx + heart_w / 2.0
    y_dia = float(_diaphragm(min(max((x_apex - m) / (w - m), 0.0), 1.0), cp[1], dome))
    hcy = min(cp_l - 0.5 * dome - 0.1, y_dia - 0.035 - apex_dy)
    vext = math.sqrt((ha * math.sin(tilt)) ** 2 + (hb * math.cos(tilt)) ** 2)
    hsl = fr.win(hcx - heart_w / 2 - 0.03, hcx + heart_w / 2 + 0.03, hcy - vext - 0.03, hcy + stretch * vext)
    hya = ya[hsl]
    y_eff = np.where(hya > hcy, hcy + (hya - hcy) * F32(1.0 / stretch), hya)
    hx, hy = _draw.rotate(xa[hsl] - F32(hcx), y_eff - F32(hcy), -tilt)
    heart_mask = np.zeros_like(xa)
    heart_mask[hsl] = ramp((1.0 - np.sqrt((hx * (1.0 / ha)) ** 2 + (hy * (1.0 / hb)) ** 2)) * hb, e)
    knob_y = top + 0.3
    ksl = fr.around(m - 0.015, knob_y, 0.08)
    overlay = heart_mask.copy()
    knob = ramp(0.075 - np.sqrt((xa[ksl] - (m - 0.015)) ** 2 + (ya[ksl] - knob_y) ** 2), e)
    overlay[ksl] = np.maximum(overlay[ksl], knob)

    # ---- body, bones, soft tissue ---------------------------------------------------------------------
    shoulder = -1.02 + 0.15 * np.sqrt(np.clip((ax - 0.13) * (1 / 0.5), 0.0, 1.0))
    axilla = top + 0.28
    chest_wall = np.where(ya > axilla, A.body_w - ax, 2.0 - ax)
    body = ramp(np.minimum(chest_wall, ya - shoulder), 3 * e)
    arm = ramp(np.minimum(ax - (A.body_w + 0.03 + 0.03 * (ya - axilla)), ya - axilla), 3 * e)
    thick = np.sqrt(np.clip(1.0 - (xa * (1.0 / (A.body_w + 0.05))) ** 2, 0.0, 1.0))
    dens = body * A.tissue * (0.62 + 0.38 * thick) + arm * (0.7 * A.tissue)
    if A.sex == "F":
        bcy = cp_l - 0.12
        for side in (-1, 1):
            sl = fr.around(side * w * 0.62, bcy, 0.34, 0.24)
            q = ((ax[sl] - w * 0.62) * (1 / 0.32)) ** 2 + ((ya[sl] - bcy) * (1 / 0.22)) ** 2
            breast = np.clip((1.0 - q) * 2.5, 0.0, 1.0) * smoothstep(bcy - 0.25, bcy + 0.1, ya[sl])
            add_to(dens, sl, 0.045 * breast)
    # humeral heads in the upper corners
    for side in (-1, 1):
        sl = fr.around(side * (w + 0.24), top - 0.02, 0.15)
        hum = _blob(ax[sl], ya[sl], w + 0.24, top - 0.02, 0.13, 0.14, e)
        add_to(dens, sl, 0.12 * np.sqrt(hum) + 0.04 * hum)
    # spine with vertebral bodies (faint through the heart) and trachea
    sl = fr.win(-0.08, 0.08, -1.2, 1.2)
    spine = np.sqrt(np.clip(1.0 - (xa[sl] * (1 / 0.07)) ** 2, 0.0, 1.0))
    vert = 0.85 + 0.15 * np.cos(ya[sl] * F32(2 * math.pi / 0.13))
    add_to(dens, sl, 0.07 * spine * vert * (1.0 - 0.4 * below[sl]))
    sl = fr.win(-0.06, 0.06, -1.2, -0.15)
    trachea = ramp(0.03 - np.abs(xa[sl] - 0.015 * (ya[sl] + 0.3)), e) * smoothstep(-0.2, -0.32, ya[sl])
    add_to(dens, sl, -0.1 * trachea)
    add_to(dens, hsl, 0.015 * heart_mask[hsl] * (1.0 - below[hsl]))

    # ribs: one periodic field for all posterior ribs, another for the fainter anterior ribs
    sl = fr.win(-w - 0.07, w + 0.07, top - 0.13, cp_low + 0.05)
    rax, rya = ax[sl], ya[sl]
    u = rax * (1.0 / w)
    rib_zone = ramp(np.minimum(w + 0.06 - rax, rya - (top - 0.12)), 3 * e) * (1.0 - 0.7 * below[sl])
    rib_zone *= smoothstep(0.06, 0.14, rax)
    t_post = rya - w * (-0.45 * u + 0.85 * u * u) - top
    f = _frac(t_post * F32(1.0 / A.rib_spacing) * (1.0 - 0.1 * t_post) + A.rib_phase)
    rib = smoothstep(0.0, 0.07, f) * (1.0 - smoothstep(0.3, 0.37, f))
    cortex = np.exp(-(((f - 0.035) * (1 / 0.03)) ** 2)) + np.exp(-(((f - 0.335) * (1 / 0.03)) ** 2))
    t_ant = rya + 0.5 * (rax - w) - top
    fa = _frac(t_ant * F32(1.0 / (A.rib_spacing * 1.25)) + A.rib_phase * 0.7)
    ant = smoothstep(0.3, 0.5, u) * ramp(0.15 - np.abs(fa - 0.2), 0.1)
    add_to(dens, sl, rib_zone * (0.045 * rib + 0.03 * cortex + 0.025 * ant))

    # clavicles (symmetric, slightly S-shaped), scapulae in AP
    clav_y = A.clavicle_y - (0.06 if ap else 0.0)
    slope = 0.05 if ap else 0.13
    sl = fr.win(-w - 0.16, w + 0.16, clav_y - slope - 0.07, clav_y + 0.07)
    cax, cya = ax[sl], ya[sl]
    bend = 0.018 * np.sin(np.clip((cax - 0.08) * F32(1.0 / (w + 0.02)), 0.0, 1.0) * F32(2 * math.pi))
    dclav, _ = _draw.segment_distance(cax, cya + bend, (0.08, clav_y), (w + 0.1, clav_y - slope))
    add_to(dens, sl, 0.13 * ramp(0.028 - dclav, e) + 0.04 * ramp(0.038 - dclav, 2 * e))
    if ap:
        sl = fr.win(-w - 0.05, w + 0.05, top - 0.05, top + 0.5)
        sax, sya = ax[sl], ya[sl]
        scap = ramp(np.minimum(sax - (w - 0.2), np.minimum(0.45 - (sya - top) - 0.6 * (w - sax), sya - top)), 3 * e)
        add_to(dens, sl, 0.05 * scap)

    # gastric bubble under the left hemidiaphragm (image right)
    gx, gy = m + 0.45 * (w - m), float(_diaphragm(0.45, cp[1], dome)) + 0.08
    sl = fr.around(gx, gy, 0.12, 0.08)
    add_to(dens, sl, -0.12 * _blob(xa[sl], ya[sl], gx, gy, 0.1, 0.055, 2 * e))

    # ---- lungs, vessels -------------------------------------------------------------------------------
    opac = np.zeros_like(xa)  # fraction of lung air replaced by water density (fluid, consolidation, ...)
    extra_air = np.zeros_like(xa)  # extra darkening (pneumothorax, bullae)
    add = np.zeros_like(xa)  # additive density outside the air model
    vgain = np.full_like(xa, vessel_gain)
    lung_dark = np.zeros_like(xa)
    lung_mask = np.zeros_like(xa)
    vessels = np.zeros_like(xa)
    hila: dict[int, tuple[float, float]] = {}
    for i, (side, L) in enumerate(lungs.items()):
        depth = 0.55 + 0.45 * np.clip(L.d * F32(1.0 / 0.1), 0.0, 1.0)
        add_to(lung_dark, L.sl, L.mask * depth * (1.0 - 0.15 * np.clip(L.hn, 0.0, 1.0)))
        add_to(lung_mask, L.sl, L.mask)
        hx0, hy0 = side * (m + 0.03), top + 0.48 * (cp[side] - top)
        hila[side] = (hx0, hy0)
        rx, ry = side * (L.x - hx0), L.y - hy0
        r = np.sqrt(rx * rx + ry * ry) + F32(1e-6)
        theta = np.arctan2(ry, rx) + 0.1 * np.sin(8.0 * r + vessel_phase[i])
        idx = ((theta + F32(math.pi)) * F32(_VBINS / (2 * math.pi))).astype(np.int32) % _VBINS
        dth = np.where(r < 0.22, vessel_tables[2 * i][idx], vessel_tables[2 * i + 1][idx])
        width = 0.004 + 0.012 * np.clip(1.0 - r * (1 / 0.7), 0.0, 1.0)
        lines = np.exp(-((dth * r / width) ** 2)) * np.clip(1.0 - r * (1 / 0.75), 0.0, 1.0)
        hilum = np.exp(-((r * (1 / 0.07)) ** 2))
        add_to(vessels, L.sl, L.mask * (lines + 0.6 * hilum))
    lung_dark *= 1.0 - 0.88 * overlay

    # ---- findings -------------------------------------------------------------------------------------
    ctx = _Ctx(fr, lungs, hila, strength, zoom, opac, extra_air, add, vgain, atel_side)
    for name in FINDINGS:
        if name in present and name in _FINDING_DRAW:  # Cardiomegaly is drawn through the heart geometry
            _FINDING_DRAW[name](frng[name], ctx)

    opac = np.clip(opac, 0.0, 1.0)
    clear = 1.0 - opac
    d_total = dens - air * (lung_dark * clear + extra_air) + 0.085 * vessels * vgain * clear + add
    d_total += 0.012 * mottle * body + 0.012 * texture * lung_mask

    img = A.brightness + exposure + A.contrast * gain * d_total
    img = np.clip(img, 0.0, 1.0) ** gamma + noise_sd * grain
    lmask = {side: np.zeros_like(xa) for side in (-1, 1)}
    for side, L in lungs.items():
        lmask[side][L.sl] = L.mask
    regions = {
        "right_lung": lmask[-1],  # patient right = image left
        "left_lung": lmask[1],
        "heart": heart_mask * (1.0 - below),
        "body": body,
    }
    return img.astype(F32), regions


def render_chest(
    anatomy: ChestAnatomy,
    findings: Iterable[str] = (),
    *,
    view: str = "PA",
    image_seed: int = 0,
    image_size: int = 128,
    difficulty: float = 0.5,
) -> np.ndarray:
    """Render one chest phantom as a ``(image_size, image_size)`` uint8 array.

    Everything not caused by a finding (positioning, exposure, noise, vessel pattern) depends only on
    ``anatomy``, ``view`` and ``image_seed``; each finding draws its own parameters from a generator seeded
    by (patient seed for chronic findings / ``image_seed`` for acute ones, finding name).  So rendering the
    same arguments with and without one finding changes only that finding's pixels.

    Findings: Cardiomegaly enlarges the heart to a cardiothoracic ratio > 0.5; Effusion fills a lung base
    with a meniscus that blunts the costophrenic angle and hides the dome; Emphysema gives larger, darker
    lungs with flat domes, fewer vessel markings and apical bullae; Hernia is a round retrocardiac density
    above the diaphragm near the midline, usually with an air-fluid level; Nodule a small (< 3% of the
    image width) round density; Mass a larger lobulated one; Consolidation a dense patchy opacity in one
    lung zone with air bronchograms; Infiltration a fainter patchy opacity; Pneumonia a consolidated core
    with surrounding haze; Atelectasis a plate-like band plus medial basal opacity and a raised
    hemidiaphragm (volume loss); Pneumothorax a dark rim without markings at the apex and lateral margin
    with a visible pleural line; Edema bilateral perihilar "bat-wing" haze, Kerley B lines and vascular
    congestion; Fibrosis a reticular net in the upper and peripheral lungs; Pleural_Thickening a bright
    band along the lateral chest wall or apex.
    """
    d = _draw.check_float("difficulty", difficulty, 0.0, 1.0)
    size = _draw.check_int("image_size", image_size, 32, 4096)
    img, _ = _render(anatomy, tuple(findings), view, int(image_seed), size, d)
    return _draw.to_uint8(img)


def chest_regions(
    anatomy: ChestAnatomy,
    findings: Iterable[str] = (),
    *,
    view: str = "PA",
    image_seed: int = 0,
    image_size: int = 128,
    difficulty: float = 0.5,
) -> dict[str, np.ndarray]:
    """Soft masks in [0, 1] of the image drawn by :func:`render_chest` with the same arguments.

    Keys: ``right_lung`` (patient right, image left), ``left_lung``, ``heart``, ``body``.
    """
    _, regions = _render(anatomy, tuple(findings), view, int(image_seed), int(image_size), float(difficulty))
    return regions


def _render_job(job: tuple[ChestAnatomy, str, tuple[str, ...], int, float], image_size: int) -> np.ndarray:
    anatomy, view, findings, image_seed, difficulty = job
    img, _ = _render(anatomy, findings, view, image_seed, image_size, difficulty)
    return _draw.to_uint8(img)


# ====================================================================================================
# generator
# ====================================================================================================


def generate(
    out_dir: str | Path,
    *,
    n_patients: int = 2500,
    images_per_patient: int | Sequence[int] = (1, 4),
    image_size: int = 128,
    difficulty: float = 0.5,
    prevalence: Mapping[str, float] | None = None,
    seed: int = 0,
    workers: int = 1,
) -> pd.DataFrame:
    """Write a synthetic ChestX-ray14 stand-in under ``out_dir`` and return its index table.

    Files: ``out_dir/images/c<patient>_<k>.png`` (8-bit grayscale, ``image_size`` square) and
    ``out_dir/index.csv`` (written last, atomically: the completion marker) with columns ``image_id,
    patient_id, path, view, age, sex`` and the 14 labels of :data:`FINDINGS` (int 0/1).  The number of
    images per patient is drawn uniformly from the inclusive range ``images_per_patient``.  Output is
    byte-identical for the same arguments, whatever ``workers``.
    """
    _check_plan_args(n_patients, images_per_patient, seed)
    seed, image_size, workers = _draw.check_common(seed, image_size, workers)
    difficulty = _draw.check_float("difficulty", difficulty, 0.0, 1.0)
    _check_prevalence(prevalence)
    specs = plan(n_patients, images_per_patient, prevalence, seed)
    root = _draw.prepare_out_dir(out_dir)
    jobs = [(s.path, (s.anatomy, s.view, s.findings, s.image_seed, difficulty)) for s in specs]
    _draw.render_all(_render_job, jobs, root, image_size=image_size, workers=workers, desc=f"generate {_NAME}")
    table = _table(specs)
    _draw.write_index(root, table)
    return table
