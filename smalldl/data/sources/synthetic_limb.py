"""Synthetic upper-extremity radiographs: an offline stand-in for MURA v1.1.

Phantoms, not patients: each image is drawn from analytic bone and soft-tissue shapes so that the MURA
source-pretraining stage of the workflow can run without the real data set.  Seven study types, as in
MURA, with recognisably different bone geometry:

- ``XR_ELBOW``: distal humerus with condyles meeting radius and ulna (straight on AP, bent on lateral);
- ``XR_FINGER``: one finger, three phalanges with joints and the metacarpal head;
- ``XR_FOREARM``: radius and ulna side by side, wrist and elbow ends at the edges;
- ``XR_HAND``: carpal bones, five metacarpals and the phalanges of five digits;
- ``XR_HUMERUS``: one long bone with the humeral head and the condyles at the edges;
- ``XR_SHOULDER``: humeral head and neck, glenoid, scapula, clavicle and acromion, ribs and lung;
- ``XR_WRIST``: distal radius and ulna, two rows of carpal bones, metacarpal bases.

Long bones are projections of hollow cylinders, so the cortex is brighter than the medulla; joints are
gaps between rounded bone ends.  Every patient has one study (one study type), normal or abnormal with
probability ``abnormal_rate``; an abnormal study shows one of: a fracture (a dark gap across a bone,
displaced and angulated), hardware (a very bright metal plate with screws, an intramedullary nail or wires) or
a lesion (a lytic dark or sclerotic bright round area inside a bone).  The images of a study are different
projections (AP, oblique, lateral) of the same limb with the same abnormality.  MURA-like nuisances:
varying rotation, magnification and exposure, collimation borders and a laterality marker.

Public entry points: :func:`generate`, :func:`plan`, :func:`render_limb`, :func:`limb_regions`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.data.sources import _draw
from smalldl.data.sources._draw import F32, ramp
from smalldl.utils import derive_seed

__all__ = [
    "ABNORMALITIES",
    "STUDY_TYPES",
    "STUDY_WEIGHTS",
    "LimbImageSpec",
    "LimbStudy",
    "generate",
    "index_files",
    "limb_regions",
    "plan",
    "plan_index",
    "render_limb",
]

STUDY_TYPES: tuple[str, ...] = (
    "XR_ELBOW",
    "XR_FINGER",
    "XR_FOREARM",
    "XR_HAND",
    "XR_HUMERUS",
    "XR_SHOULDER",
    "XR_WRIST",
)
"""The seven MURA study types (also the ``view`` column)."""

STUDY_WEIGHTS: dict[str, float] = {
    "XR_ELBOW": 1912,
    "XR_FINGER": 1935,
    "XR_FOREARM": 827,
    "XR_HAND": 2185,
    "XR_HUMERUS": 727,
    "XR_SHOULDER": 3015,
    "XR_WRIST": 3697,
}
"""Relative frequency of each study type (MURA v1.1 training studies)."""

ABNORMALITIES: tuple[str, ...] = ("fracture", "hardware", "lesion")
_ABNORMALITY_P = (0.5, 0.25, 0.25)
_NAME = "synthetic_limb"
_ZOOM = {
    "XR_ELBOW": 1.3,
    "XR_FINGER": 1.05,
    "XR_FOREARM": 1.0,
    "XR_HAND": 1.15,
    "XR_HUMERUS": 1.0,
    "XR_SHOULDER": 1.1,
    "XR_WRIST": 1.35,
}


# ====================================================================================================
# bone primitives (local frame: limb axis vertical, y down, normalised units)
# ====================================================================================================


@dataclass(frozen=True)
class _Tube:
    """A long bone: hollow tapered cylinder from p0 to p1 (radius r0 -> r1), rounded ends."""

    p0: tuple[float, float]
    p1: tuple[float, float]
    r0: float
    r1: float
    cortex: float = 0.35  # cortical thickness as a fraction of the radius
    flare0: float = 0.0  # extra radius at the ends (metaphyses)
    flare1: float = 0.0
    long: bool = True  # eligible for fracture / hardware


@dataclass(frozen=True)
class _Knob:
    """A short or round bone (carpal, epiphysis, humeral head): ellipsoid with a bright rim."""

    c: tuple[float, float]
    rx: float
    ry: float
    angle: float = 0.0
    density: float = 0.75


@dataclass(frozen=True)
class _Soft:
    """Soft tissue: a capsule (segment with radius) with an ellipsoidal thickness profile."""

    p0: tuple[float, float]
    p1: tuple[float, float]
    r: float
    density: float = 1.0


@dataclass
class _Layout:
    bones: list[_Tube | _Knob] = field(default_factory=list)
    soft: list[_Soft] = field(default_factory=list)
    lung: tuple[float, float, float, float] | None = None  # (cx, cy, rx, ry) dark air region
    ribs: bool = False


def _layout(study_type: str, g: np.random.Generator, squeeze: float, lateral: bool) -> _Layout:
    """Bones and soft tissue of one study type in the local frame; ``g`` draws patient-level sizes."""
    L = _Layout()
    k = g.uniform(0.92, 1.08)  # patient bone size
    sq = squeeze

    def X(v: float) -> float:
        return v * sq

    if study_type == "XR_FOREARM":
        L.soft.append(_Soft((0.0, -1.4), (0.0, 1.4), 0.3 * k))
        L.bones.append(_Tube((X(-0.1), -1.15), (X(-0.13), 0.82), 0.04 * k, 0.055 * k, flare1=0.035 * k))
        L.bones.append(_Tube((X(0.09), -1.2), (X(0.08), 0.8), 0.05 * k, 0.035 * k, flare0=0.03 * k))
        for cx in (-0.16, -0.04, 0.08):
            L.bones.append(_Knob((X(cx), 1.0), 0.055 * k * sq + 0.02, 0.05 * k))
    elif study_type == "XR_HUMERUS":
        L.soft.append(_Soft((0.0, -1.4), (0.0, 1.4), 0.4 * k))
        L.bones.append(_Tube((0.0, -0.7), (0.02, 0.78), 0.085 * k, 0.075 * k, 0.32, 0.05 * k, 0.06 * k))
        L.bones.append(_Knob((0.06, -0.93), 0.2 * k, 0.19 * k))
        L.bones.append(_Knob((0.02, 0.95), 0.2 * k * max(sq, 0.6), 0.08 * k))
    elif study_type == "XR_SHOULDER":
        L.soft.append(_Soft((-0.6, -0.2), (0.6, 0.3), 0.95, 0.8))
        L.soft.append(_Soft((0.3, 0.0), (0.4, 1.4), 0.45))
        L.lung = (-0.95, 0.55, 0.45, 0.7)
        L.ribs = True
        L.bones.append(_Knob((-0.55, 0.25), 0.3 * sq + 0.05, 0.6, 0.15, 0.25))  # scapula body
        L.bones.append(_Knob((-0.13, -0.1), 0.06, 0.2 * k, 0.0, 0.8))  # glenoid
        L.bones.append(_Knob((0.12, -0.1), 0.25 * k, 0.26 * k))  # humeral head
        L.bones.append(_Tube((0.22, 0.2), (0.32, 1.35), 0.12 * k, 0.11 * k, 0.3))
        L.bones.append(_Tube((-1.3, -0.7), (0.1, -0.55), 0.055 * k, 0.06 * k, 0.3))  # clavicle
        L.bones.append(_Tube((-0.05, -0.48), (0.32, -0.44), 0.05 * k, 0.045 * k, 0.35, long=False))  # acromion
        L.bones.append(_Knob((-0.05, -0.3), 0.05, 0.08, 0.3, 0.6))  # coracoid
    elif study_type == "XR_ELBOW":
        L.soft.append(_Soft((0.0, -1.4), (0.0, 0.0), 0.36 * k))
        L.bones.append(_Tube((0.0, -1.3), (0.0, -0.3), 0.09 * k, 0.11 * k, 0.32, 0.0, 0.05 * k))
        L.bones.append(_Knob((0.0, -0.14), 0.24 * k * max(sq, 0.55), 0.1 * k))  # condyles
        phi = math.radians(g.uniform(80, 110) if lateral else g.uniform(-12, 0))  # forearm direction
        dx, dy = math.sin(phi), math.cos(phi)
        L.soft.append(_Soft((0.0, 0.0), (1.4 * dx, 1.4 * dy), 0.3 * k))
        px, py = -dy, dx  # perpendicular
        off = 0.08 * k * sq
        r_start = (-off * px + 0.04 * dx, -off * py + 0.04 * dy)
        u_start = (off * px - 0.02 * dx, off * py - 0.02 * dy)
        L.bones.append(
            _Tube(r_start, (r_start[0] + 1.3 * dx, r_start[1] + 1.3 * dy), 0.05 * k, 0.055 * k, flare0=0.025)
        )
        L.bones.append(_Tube(u_start, (u_start[0] + 1.3 * dx, u_start[1] + 1.3 * dy), 0.06 * k, 0.04 * k, flare0=0.03))
        L.bones.append(_Knob((u_start[0] - 0.08 * dx, u_start[1] - 0.08 * dy), 0.07 * k, 0.07 * k))  # olecranon
    elif study_type == "XR_WRIST":
        L.soft.append(_Soft((0.0, -1.4), (0.0, 1.4), 0.4 * k))
        L.bones.append(_Tube((X(-0.12), -1.3), (X(-0.12), -0.3), 0.065 * k, 0.1 * k, flare1=0.04 * k))
        L.bones.append(_Tube((X(0.15), -1.3), (X(0.14), -0.33), 0.045 * k, 0.05 * k))
        carpals = [
            (-0.15, -0.12, 0.075, 0.055),
            (-0.02, -0.14, 0.06, 0.055),
            (0.1, -0.1, 0.055, 0.05),
            (0.15, -0.06, 0.035, 0.035),
            (-0.22, 0.09, 0.06, 0.055),
            (-0.1, 0.1, 0.05, 0.055),
            (0.0, 0.07, 0.06, 0.085),
            (0.11, 0.07, 0.06, 0.075),
        ]
        for cx, cy, rx, ry in carpals:
            L.bones.append(_Knob((X(cx * k), cy * k), rx * k * max(sq, 0.6), ry * k))
        for i, bx in enumerate((-0.19, -0.08, 0.02, 0.11, 0.19)):
            if i == 0:
                L.bones.append(_Tube((X(-0.25), 0.2), (X(-0.5), 0.7), 0.04 * k, 0.035 * k, flare1=0.02))
            else:
                L.bones.append(_Tube((X(bx), 0.22), (X(bx * 1.5), 1.3), 0.038 * k, 0.032 * k, flare0=0.015))
    elif study_type == "XR_HAND":
        s = 0.62 * k
        L.soft.append(_Soft((0.0, 0.15 * s), (0.0, 1.6), 0.42 * s / 0.62))
        L.bones.append(_Tube((X(-0.12 * s), 1.6), (X(-0.12 * s), 0.78), 0.07 * s, 0.1 * s, flare1=0.03 * s))
        L.bones.append(_Tube((X(0.15 * s), 1.6), (X(0.14 * s), 0.8), 0.045 * s, 0.05 * s))
        for cx, cy in (
            (-0.15, 0.6),
            (-0.02, 0.6),
            (0.1, 0.62),
            (-0.2, 0.43),
            (-0.08, 0.43),
            (0.02, 0.45),
            (0.12, 0.45),
        ):
            L.bones.append(_Knob((X(cx * s / 0.62), cy), 0.055 * s / 0.62 * max(sq, 0.6), 0.05 * s / 0.62))
        fingers = [(-0.19, 0.36), (-0.08, 0.36), (0.02, 0.36), (0.11, 0.37), (0.19, 0.38)]
        lengths = [
            (0.0, 0.0, 0.0),
            (0.4, 0.22, 0.14),
            (0.44, 0.26, 0.15),
            (0.41, 0.24, 0.14),
            (0.32, 0.18, 0.13),
        ]
        spread = g.uniform(0.7, 1.2)
        for i, (bx, by) in enumerate(fingers):
            ang = math.radians((-8 + 5 * i) * spread)
            if i == 0:  # thumb
                base = (X(-0.24), 0.3)
                ang = math.radians(-40 * spread)
                segs = (0.3, 0.22, 0.15)
                radii = (0.036, 0.033, 0.03)
            else:
                base = (X(bx), by)
                segs = (0.44, *lengths[i])
                radii = (0.034, 0.032, 0.028, 0.025)
            dx, dy = math.sin(ang) * sq, -math.cos(ang)
            p = base
            L.soft.append(_Soft(base, (base[0] + 1.2 * dx, base[1] + 1.2 * dy), 0.075 if i else 0.08, 0.9))
            for j, (ln, rr) in enumerate(zip(segs, radii, strict=False)):
                # segment ends are the centres of the rounded bone ends: leave a joint space between caps
                joint = 2.0 * (rr + 0.012) * k + 0.018
                q = (p[0] + (ln - 0.06) * dx, p[1] + (ln - 0.06) * dy)
                L.bones.append(_Tube(p, q, rr * k, rr * k * 0.85, 0.38, 0.012, 0.012, long=j == 0))
                p = (q[0] + joint * dx, q[1] + joint * dy)
    elif study_type == "XR_FINGER":
        L.soft.append(_Soft((0.0, 1.4), (0.0, -0.88), 0.21 * k))
        L.bones.append(_Knob((0.0, 1.1), 0.12 * k * max(sq, 0.7), 0.1 * k))  # metacarpal head
        segs = ((0.95, 0.33, 0.085, 0.07), (0.11, -0.3, 0.072, 0.06), (-0.49, -0.74, 0.062, 0.045))
        for y0, y1, r0, r1 in segs:
            L.bones.append(_Tube((0.0, y0), (0.0, y1), r0 * k, r1 * k, 0.36, 0.02 * k, 0.02 * k))
        L.bones.append(_Knob((0.0, -0.76), 0.06 * k, 0.035 * k))  # tuft
        if g.random() < 0.5:  # neighbouring finger at the edge
            side = g.choice((-1.0, 1.0))
            L.soft.append(_Soft((side * 0.55, 1.4), (side * 0.6, -0.5), 0.18 * k, 0.8))
            L.bones.append(_Tube((side * 0.55, 1.3), (side * 0.58, 0.3), 0.07 * k, 0.06 * k, 0.36, long=False))
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"unknown study type {study_type!r}")
    return L


# ====================================================================================================
# studies and images
# ====================================================================================================


@dataclass(frozen=True)
class LimbStudy:
    """One study: its type, the seed of its patient-level geometry and abnormality, and the abnormality."""

    study_type: str
    study_seed: int
    abnormality: str | None  # None (normal) or one of ABNORMALITIES


@dataclass(frozen=True)
class LimbImageSpec:
    """Everything needed to render one image and write its index row."""

    image_id: str
    patient_id: str
    path: str
    study_id: str
    study: LimbStudy
    image_seed: int

    @property
    def abnormal(self) -> int:
        return int(self.study.abnormality is not None)


def _check_plan_args(
    n_patients: int, images_per_study: int | Sequence[int], abnormal_rate: float, seed: int
) -> tuple[int, tuple[int, int], float, int]:
    n = _draw.check_int("n_patients", n_patients, 1)
    ips = _draw.check_range("images_per_study", images_per_study, 1)
    if ips[1] > 100:
        raise ValueError(f"images_per_study must be at most 100, got {images_per_study!r}")
    rate = _draw.check_float("abnormal_rate", abnormal_rate, 0.0, 1.0)
    return n, ips, rate, _draw.check_int("seed", seed, 0)


def plan(
    n_patients: int = 800,
    images_per_study: int | Sequence[int] = (1, 3),
    abnormal_rate: float = 0.4,
    seed: int = 0,
) -> list[LimbImageSpec]:
    """Draw patients, studies and images (no rendering): deterministic in the arguments."""
    n, (lo, hi), rate, seed = _check_plan_args(n_patients, images_per_study, abnormal_rate, seed)
    weights = np.array([STUDY_WEIGHTS[t] for t in STUDY_TYPES], dtype=np.float64)
    cum = np.cumsum(weights / weights.sum())
    width = _draw.id_width(n)
    specs: list[LimbImageSpec] = []
    for p in range(n):
        rng = np.random.default_rng(derive_seed(seed, _NAME, "patient", p))
        study_type = STUDY_TYPES[min(int(np.searchsorted(cum, rng.random(), side="right")), len(STUDY_TYPES) - 1)]
        abnormal = rng.random() < rate
        kind_u = rng.random()
        kind = ABNORMALITIES[int(np.searchsorted(np.cumsum(_ABNORMALITY_P), kind_u, side="right"))]
        k = int(rng.integers(lo, hi + 1))
        study = LimbStudy(study_type, derive_seed(seed, _NAME, "study", p), kind if abnormal else None)
        for j in range(k):
            image_id = f"l{p:0{width}d}_{j + 1:02d}"
            specs.append(
                LimbImageSpec(
                    image_id=image_id,
                    patient_id=f"L{p:0{width}d}",
                    path=f"images/{image_id}.png",
                    study_id=f"L{p:0{width}d}_S1",
                    study=study,
                    image_seed=derive_seed(seed, _NAME, "image", p, j),
                )
            )
    return specs


def _table(specs: Sequence[LimbImageSpec]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [s.image_id for s in specs],
            "patient_id": [s.patient_id for s in specs],
            "path": [s.path for s in specs],
            "view": [s.study.study_type for s in specs],
            "study_id": [s.study_id for s in specs],
            "study_type": [s.study.study_type for s in specs],
            "abnormal": np.array([s.abnormal for s in specs], dtype=np.int64),
        }
    )


#: The params that decide the plan (patients, studies, images, labels); the others change only how images look.
PLAN_PARAMS = ("n_patients", "images_per_study", "abnormal_rate")


def plan_index(dataset: str, params: Mapping[str, Any], seed: int) -> pd.DataFrame:
    """The index :func:`generate` writes for ``params`` and the dataset's ``seed``, without rendering
    (the registry's interface: smalldl.data.kinds)."""
    return _draw.planned(dataset, _NAME, params, PLAN_PARAMS, lambda **kw: _table(plan(seed=seed, **kw)))


index_files = _draw.no_index_files


# ====================================================================================================
# rendering
# ====================================================================================================


class _Xf:
    """Similarity transform local frame -> image frame (rotation, scale, translation)."""

    def __init__(self, angle: float, scale: float, tx: float, ty: float) -> None:
        self.c, self.s = math.cos(angle) * scale, math.sin(angle) * scale
        self.scale = scale
        self.t = (tx, ty)

    def __call__(self, p: tuple[float, float]) -> tuple[float, float]:
        return self.c * p[0] - self.s * p[1] + self.t[0], self.s * p[0] + self.c * p[1] + self.t[1]

    def vec(self, v: tuple[float, float]) -> tuple[float, float]:
        return self.c * v[0] - self.s * v[1], self.s * v[0] + self.c * v[1]


@dataclass
class _Cut:
    """A fracture plane (image frame): point, unit normal, gap width, displacement and angulation (radians,
    about the fracture point) of the far fragment."""

    q: tuple[float, float]
    n: tuple[float, float]
    gap: float
    shift: tuple[float, float]
    tilt: float = 0.0


@dataclass
class _Lesion:
    c: tuple[float, float]
    r: float
    lytic: bool
    strength: float


def _tube_density(
    x: np.ndarray,
    y: np.ndarray,
    p0: tuple[float, float],
    p1: tuple[float, float],
    b: _Tube,
    scale: float,
    e: float,
) -> np.ndarray:
    d, t = _draw.segment_distance(x, y, p0, p1)
    tc = np.clip(t, 0.0, 1.0)
    r = (b.r0 + (b.r1 - b.r0) * tc) * scale
    if b.flare0 or b.flare1:
        r = r + scale * (b.flare0 * np.exp(-tc * 8.0) + b.flare1 * np.exp((tc - 1.0) * 8.0))
    ri = r * (1.0 - b.cortex)
    outer = np.sqrt(np.maximum(r * r - d * d, 0.0))
    inner = np.sqrt(np.maximum(ri * ri - d * d, 0.0))
    dens = (1.0 * (outer - inner) + 0.45 * inner) / r
    return dens * ramp(r - d, e)


def _draw_tube(
    bone: np.ndarray,
    size: int,
    xf: _Xf,
    b: _Tube,
    e: float,
    cut: _Cut | None = None,
    lesion: _Lesion | None = None,
) -> tuple[slice, slice]:
    p0, p1 = xf(b.p0), xf(b.p1)
    rmax = (max(b.r0, b.r1) + max(b.flare0, b.flare1)) * xf.scale + 3 * e
    pad = rmax
    if cut is not None:
        pad += math.hypot(*cut.shift) + abs(cut.tilt) * _FRACTURE_REACH
    if lesion is not None:
        pad = max(pad, lesion.r + 3 * e)
    win = _draw.Window(
        size,
        min(p0[0], p1[0]) - pad,
        max(p0[0], p1[0]) + pad,
        min(p0[1], p1[1]) - pad,
        max(p0[1], p1[1]) + pad,
    )
    if win.empty:
        return win.sl
    x, y = win.x, win.y
    if cut is None:
        dens = _tube_density(x, y, p0, p1, b, xf.scale, e)
    else:
        side = (x - cut.q[0]) * cut.n[0] + (y - cut.q[1]) * cut.n[1]
        near = _tube_density(x, y, p0, p1, b, xf.scale, e) * ramp(-side - cut.gap / 2, e)
        # far fragment: undo its displacement, then its rotation about the fracture point; both fade out away
        # from the fracture (the shaft bends back into line), so that the change stays local
        w = 1.0 - _draw.smoothstep(0.4 * _FRACTURE_REACH, _FRACTURE_REACH, np.abs(side))
        u0, v0 = x - w * cut.shift[0] - cut.q[0], y - w * cut.shift[1] - cut.q[1]
        ct, st = np.cos(cut.tilt * w), np.sin(cut.tilt * w)
        xs, ys = cut.q[0] + ct * u0 + st * v0, cut.q[1] - st * u0 + ct * v0
        side_s = (xs - cut.q[0]) * cut.n[0] + (ys - cut.q[1]) * cut.n[1]
        far = _tube_density(xs, ys, p0, p1, b, xf.scale, e) * ramp(side_s - cut.gap / 2, e)
        dens = near + far
    if lesion is not None:
        # a round, slightly expansile lesion: its margin may bulge past a thin cortex, as in real bone cysts
        rr = np.sqrt((x - lesion.c[0]) ** 2 + (y - lesion.c[1]) ** 2)
        disk = ramp(lesion.r - rr, 1.5 * e)
        w = max(1.5 * e, 0.22 * lesion.r)  # rim thickness
        rim = np.exp(-(((rr - lesion.r) / w) ** 2))
        if lesion.lytic:  # dark hole with a bright sclerotic rim
            dens = dens * (1.0 - 0.9 * lesion.strength * disk) + 0.8 * lesion.strength * rim
        else:  # dense round area with a sharp margin
            dens = (
                dens * (1.0 - disk) + disk * (0.7 * dens + 0.9 * lesion.strength + 0.35) + 0.3 * lesion.strength * rim
            )
    bone[win.sl] += dens
    return win.sl


def _draw_knob(bone: np.ndarray, size: int, xf: _Xf, b: _Knob, e: float) -> None:
    c = xf(b.c)
    rx, ry = b.rx * xf.scale, b.ry * xf.scale
    win = _draw.Window.around(size, c[0], c[1], max(rx, ry) + 3 * e)
    if win.empty:
        return
    ang = b.angle + math.atan2(xf.s, xf.c)
    u, v = _draw.rotate(win.x - c[0], win.y - c[1], -ang)
    q = (u / rx) ** 2 + (v / ry) ** 2
    rim = np.exp(-(((np.sqrt(q) - 0.9) / 0.08) ** 2))
    bone[win.sl] += (
        b.density * (0.6 * np.sqrt(np.clip(1.0 - q, 0.0, 1.0)) + 0.5 * rim) * ramp((1.0 - np.sqrt(q)) * min(rx, ry), e)
    )


def _draw_soft(soft: np.ndarray, size: int, xf: _Xf, s: _Soft, e: float) -> None:
    p0, p1 = xf(s.p0), xf(s.p1)
    r = s.r * xf.scale
    win = _draw.Window(size, min(p0[0], p1[0]) - r, max(p0[0], p1[0]) + r, min(p0[1], p1[1]) - r, max(p0[1], p1[1]) + r)
    if win.empty:
        return
    d, _ = _draw.segment_distance(win.x, win.y, p0, p1)
    prof = s.density * np.sqrt(np.clip(1.0 - (d / r) ** 2, 0.0, 1.0)) * ramp(r - d, 2 * e)
    np.maximum(soft[win.sl], prof, out=soft[win.sl])


def _box(
    x: np.ndarray,
    y: np.ndarray,
    c: tuple[float, float],
    axis: tuple[float, float],
    half_len: float,
    half_w: float,
    e: float,
) -> np.ndarray:
    """Soft filled rectangle centred at ``c`` with unit direction ``axis``."""
    dx, dy = x - c[0], y - c[1]
    along = dx * axis[0] + dy * axis[1]
    across = -dx * axis[1] + dy * axis[0]
    return ramp(half_len - np.abs(along), e) * ramp(half_w - np.abs(across), e)


def _draw_hardware(
    metal: np.ndarray, size: int, xf: _Xf, b: _Tube, t: float, g: np.random.Generator, e: float, z: float
) -> None:
    p0, p1 = xf(b.p0), xf(b.p1)
    length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
    ax_ = ((p1[0] - p0[0]) / length, (p1[1] - p0[1]) / length)
    perp = (-ax_[1], ax_[0])
    r = 0.5 * (b.r0 + b.r1) * xf.scale
    kind = g.random()
    c = (p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1]))
    win = _draw.Window.around(size, c[0], c[1], max(0.5 * length, 0.4) + 3 * r)
    if win.empty:
        return
    x, y = win.x, win.y
    if kind < 0.6:  # plate along the shaft, fixed by screws across the bone
        side = g.choice((-1.0, 1.0))
        half = min(0.32, max(0.12, z * g.uniform(0.18, 0.28) * length))
        pc = (c[0] + side * 1.1 * r * perp[0], c[1] + side * 1.1 * r * perp[1])
        m = _box(x, y, pc, ax_, half, max(0.026, 0.3 * r), e)
        n_screws = int(g.integers(3, 6))
        for i in range(n_screws):
            f = -1.0 + 2.0 * (i + 0.5) / n_screws
            sc = (
                pc[0] + f * 0.85 * half * ax_[0] - side * 1.1 * r * perp[0],
                pc[1] + f * 0.85 * half * ax_[1] - side * 1.1 * r * perp[1],
            )
            m = np.maximum(m, _box(x, y, sc, perp, 1.3 * r, max(0.015, 0.15 * r), e))
    elif kind < 0.85:  # intramedullary nail with locking screws
        half = min(0.5, 0.42 * length)
        m = _box(x, y, c, ax_, half, max(0.022, 0.32 * r), e)
        for f in (-0.8, 0.8):
            sc = (c[0] + f * half * ax_[0], c[1] + f * half * ax_[1])
            m = np.maximum(m, _box(x, y, sc, perp, 1.2 * r, max(0.014, 0.12 * r), e))
    else:  # Kirschner wires
        m = np.zeros_like(x)
        for _ in range(int(g.integers(2, 4))):
            ang = g.uniform(-0.6, 0.6)
            d = (
                math.cos(ang) * ax_[0] - math.sin(ang) * ax_[1],
                math.sin(ang) * ax_[0] + math.cos(ang) * ax_[1],
            )
            off = g.uniform(-0.08, 0.08) * length
            wc = (c[0] + off * ax_[0], c[1] + off * ax_[1])
            m = np.maximum(m, _box(x, y, wc, d, max(0.15, z * 0.25 * length), max(0.013, 0.7 * e), e))
    np.maximum(metal[win.sl], m, out=metal[win.sl])


_CENTRAL = 0.5  # abnormalities sit within this radius of the layout centre, so every image shows them
_SITE = 0.4  # ... and within this box of the image centre (normalised units), so that crops keep them
_FRACTURE_REACH = 0.3  # how far (normalised units) from the fracture the far fragment is displaced
_BONE_MAX = 0.84  # brightest tissue (before the exposure gamma); metal is brighter and saturates


def _target(study: LimbStudy, arng: np.random.Generator) -> tuple[int, float]:
    """Study-level choice of the abnormal bone (index into the layout) and the position along it.

    Chosen on the reference (AP, unsqueezed) layout among long-bone points within ``_CENTRAL`` of the
    centre; every projection of the study keeps the same bone list, so the abnormality is the same one.
    """
    ref = _layout(study.study_type, np.random.default_rng(study.study_seed), 1.0, False)
    ts = np.linspace(0.2, 0.8, 13)
    options: list[tuple[int, np.ndarray]] = []
    for i, b in enumerate(ref.bones):
        if isinstance(b, _Tube) and b.long:
            px = b.p0[0] + ts * (b.p1[0] - b.p0[0])
            py = b.p0[1] + ts * (b.p1[1] - b.p0[1])
            ok = ts[np.hypot(px, py) < _CENTRAL]
            if len(ok):
                options.append((i, ok))
    if not options:  # pragma: no cover - every layout has a central long bone
        raise RuntimeError(f"no central long bone in {study.study_type}")
    i, ok = options[int(arng.integers(0, len(options)))]
    return i, float(ok[int(arng.integers(0, len(ok)))])


def _render(
    study: LimbStudy, image_seed: int, size: int, difficulty: float, abnormality: str | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if study.study_type not in STUDY_TYPES:
        raise ValueError(f"study_type must be one of {STUDY_TYPES}, got {study.study_type!r}")
    if abnormality is not None and abnormality not in ABNORMALITIES:
        raise ValueError(f"abnormality must be None or one of {ABNORMALITIES}, got {abnormality!r}")
    strength = 1.0 - 0.6 * difficulty
    zoom = 1.0 - 0.3 * difficulty

    # image-level randomness, always in the same order
    rng = np.random.default_rng(image_seed)
    proj = rng.random()
    lateral = proj < 0.35
    squeeze = 0.5 if lateral else (0.75 if proj < 0.6 else 1.0)
    angle = rng.uniform(-0.6, 0.6) + (math.pi / 2 if rng.random() < 0.15 else 0.0)
    scale = rng.uniform(0.85, 1.1) * _ZOOM[study.study_type]
    tx, ty = rng.uniform(-0.08, 0.08, 2)
    bg = rng.uniform(0.02, 0.08)
    soft_c = rng.uniform(0.22, 0.32)
    bone_c = rng.uniform(0.4, 0.52)
    gamma = rng.uniform(0.85, 1.15)
    noise_sd = rng.uniform(0.01, 0.02) * (1.0 + 1.5 * difficulty)
    collimate = rng.random() < 0.5
    coll = rng.uniform(0.86, 0.98, 4)
    coll_angle = rng.uniform(-0.15, 0.15)
    coll_level = rng.uniform(0.45, 0.75)
    marker = rng.random() < 0.7
    marker_pos = rng.uniform(0.55, 0.85, 2) * rng.choice((-1.0, 1.0), 2)
    grain = _draw.grain(rng, size, 2)
    tissue_noise = _draw.smooth_noise(rng, size, 8)

    # patient/study-level geometry and abnormality
    srng = np.random.default_rng(study.study_seed)
    layout = _layout(study.study_type, srng, squeeze, lateral)
    arng = np.random.default_rng(derive_seed(study.study_seed, "abnormality"))
    xf = _Xf(float(angle), float(scale), float(tx), float(ty))
    e = _draw.pixel(size)

    target, t_pos = _target(study, arng)
    # keep the abnormal site (chosen for every study, normal or not) inside the central part of the image, so
    # that crops keep it: shift the whole projection when needed
    tb = layout.bones[target]
    assert isinstance(tb, _Tube)
    p0, p1 = xf(tb.p0), xf(tb.p1)
    at = (p0[0] + t_pos * (p1[0] - p0[0]), p0[1] + t_pos * (p1[1] - p0[1]))
    dx = min(max(at[0], -_SITE), _SITE) - at[0]
    dy = min(max(at[1], -_SITE), _SITE) - at[1]
    if dx or dy:
        xf = _Xf(float(angle), float(scale), float(tx) + dx, float(ty) + dy)
    cut: _Cut | None = None
    lesion: _Lesion | None = None
    p0, p1 = xf(tb.p0), xf(tb.p1)
    length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
    axis = ((p1[0] - p0[0]) / length, (p1[1] - p0[1]) / length)
    at = (p0[0] + t_pos * (p1[0] - p0[0]), p0[1] + t_pos * (p1[1] - p0[1]))
    r_at = (tb.r0 + (tb.r1 - tb.r0) * t_pos) * xf.scale
    if abnormality == "fracture":
        tilt = arng.uniform(-0.6, 0.6)
        n = (
            math.cos(tilt) * axis[0] - math.sin(tilt) * axis[1],
            math.sin(tilt) * axis[0] + math.cos(tilt) * axis[1],
        )
        # a dark gap across the whole bone (about 2 px at 64 px for difficulty <= 0.3), both fragments
        # displaced sideways and angulated
        gap = (0.08 + 0.025 * arng.random()) * (1.0 - 0.75 * difficulty)
        k = strength * arng.uniform(0.35, 0.9) * r_at * arng.choice((-1.0, 1.0))
        shift = (k * -axis[1] + 0.25 * abs(k) * axis[0], k * axis[0] + 0.25 * abs(k) * axis[1])
        bend = strength * arng.uniform(0.12, 0.3) * arng.choice((-1.0, 1.0))
        cut = _Cut(at, n, gap, shift, bend)
    elif abnormality == "lesion":
        # at least ~6 px across at 64 px for difficulty <= 0.3; at least as wide as the bone
        radius = max(0.11 + 0.03 * arng.random(), 0.9 * r_at) * (1.0 - 0.45 * difficulty)
        lesion = _Lesion(at, radius, arng.random() < 0.6, strength)

    soft = np.zeros((size, size), F32)
    bone = np.zeros((size, size), F32)
    metal = np.zeros((size, size), F32)
    for s in layout.soft:
        _draw_soft(soft, size, xf, s, e)
    for i, b in enumerate(layout.bones):
        if isinstance(b, _Tube):
            _draw_tube(bone, size, xf, b, e, cut if i == target else None, lesion if i == target else None)
        else:
            _draw_knob(bone, size, xf, b, e)
    if abnormality == "hardware":
        _draw_hardware(metal, size, xf, tb, t_pos, arng, e, zoom)

    x, y = _draw.grid(size)
    if layout.lung is not None:
        lc = xf(layout.lung[:2])
        lr = (layout.lung[2] * xf.scale, layout.lung[3] * xf.scale)
        q = ((x - lc[0]) / lr[0]) ** 2 + ((y - lc[1]) / lr[1]) ** 2
        soft -= 0.45 * np.clip(1.0 - q, 0.0, 1.0) ** 0.3 * (soft > 0)
    if layout.ribs:
        u, v = _draw.rotate(x - F32(xf.t[0]), y - F32(xf.t[1]), -math.atan2(xf.s, xf.c))
        ph = (v - 0.25 * u * u) * F32(1.0 / (0.22 * xf.scale))
        f = ph - np.floor(ph)
        bone += 0.1 * (ramp(0.12 - np.abs(f - 0.5), 0.05)) * (u < -0.35 * xf.scale) * (soft > 0.05)

    # bone density is compressed (overlapping bones do not saturate) and the exposure has a soft shoulder
    # below _BONE_MAX, so that only metal reaches white
    dense = (1.0 - np.exp(-1.2 * bone)) * F32(1.0 / (1.0 - math.exp(-1.2)))
    img = bg + soft_c * (soft * (1.0 + 0.06 * tissue_noise)) + bone_c * dense
    knee = _BONE_MAX - 0.16
    img = np.where(img > knee, knee + 0.16 * np.tanh((img - knee) * F32(1.0 / 0.16)), img)
    img = np.clip(img, 0.0, 1.0) ** gamma
    if abnormality == "hardware":
        img = np.maximum(img, (1.1 - 0.2 * difficulty) * metal)
    if collimate:
        u, v = _draw.rotate(x, y, coll_angle)
        inside = ramp(np.minimum(np.minimum(coll[0] + u, coll[1] - u), np.minimum(coll[2] + v, coll[3] - v)), 2 * e)
        img = img * inside + coll_level * (1.0 - inside)
    if marker:
        mx, my = float(marker_pos[0]), float(marker_pos[1])
        win = _draw.Window.around(size, mx, my, 0.07)
        if not win.empty:
            mk = _box(win.x, win.y, (mx - 0.02, my), (0.0, 1.0), 0.05, 0.008, e)
            mk = np.maximum(mk, _box(win.x, win.y, (mx + 0.005, my + 0.045), (1.0, 0.0), 0.03, 0.008, e))
            img[win.sl] = np.maximum(img[win.sl], 0.95 * mk)
    img = img + noise_sd * grain
    regions = {"bone": np.clip(bone, 0.0, 1.0), "soft": soft, "metal": metal}
    return img.astype(F32), regions


def render_limb(
    study: LimbStudy,
    *,
    image_seed: int = 0,
    image_size: int = 128,
    difficulty: float = 0.5,
    abnormality: str | None | bool = True,
) -> np.ndarray:
    """Render one image of ``study`` as a ``(image_size, image_size)`` uint8 array.

    ``abnormality=True`` draws the study's own abnormality (none for a normal study); ``False``/``None``
    draws the same image without any; a name from :data:`ABNORMALITIES` draws that one.  Everything else
    (projection, positioning, exposure, noise, the abnormality's place) is the same in all cases, so the
    difference between two calls is the abnormality alone.
    """
    d = _draw.check_float("difficulty", difficulty, 0.0, 1.0)
    size = _draw.check_int("image_size", image_size, 32, 4096)
    kind = _resolve(study, abnormality)
    img, _ = _render(study, int(image_seed), size, d, kind)
    return _draw.to_uint8(img)


def limb_regions(
    study: LimbStudy, *, image_seed: int = 0, image_size: int = 128, difficulty: float = 0.5
) -> dict[str, np.ndarray]:
    """Masks of the normal image of ``study``: ``bone`` (density in [0, 1]) and ``soft`` (soft tissue)."""
    _, regions = _render(study, int(image_seed), int(image_size), float(difficulty), None)
    return regions


def _resolve(study: LimbStudy, abnormality: str | None | bool) -> str | None:
    if abnormality is True:
        return study.abnormality
    if abnormality is False or abnormality is None:
        return None
    if abnormality not in ABNORMALITIES:
        raise ValueError(f"abnormality must be a bool, None or one of {ABNORMALITIES}, got {abnormality!r}")
    return abnormality


def _render_job(job: tuple[LimbStudy, int, float], image_size: int) -> np.ndarray:
    study, image_seed, difficulty = job
    img, _ = _render(study, image_seed, image_size, difficulty, study.abnormality)
    return _draw.to_uint8(img)


# ====================================================================================================
# generator
# ====================================================================================================


def generate(
    out_dir: str | Path,
    *,
    n_patients: int = 800,
    images_per_study: int | Sequence[int] = (1, 3),
    image_size: int = 128,
    difficulty: float = 0.5,
    abnormal_rate: float = 0.4,
    seed: int = 0,
    workers: int = 1,
) -> pd.DataFrame:
    """Write a synthetic MURA stand-in under ``out_dir`` and return its index table.

    Files: ``out_dir/images/l<patient>_<k>.png`` (8-bit grayscale, ``image_size`` square) and
    ``out_dir/index.csv`` (written last, atomically) with columns ``image_id, patient_id, path, view,
    study_id, study_type, abnormal`` (``view`` = study type; ``abnormal`` int 0/1, the study's label, as in
    MURA).  Byte-identical output for the same arguments, whatever ``workers``.
    """
    _check_plan_args(n_patients, images_per_study, abnormal_rate, seed)
    seed, image_size, workers = _draw.check_common(seed, image_size, workers)
    difficulty = _draw.check_float("difficulty", difficulty, 0.0, 1.0)
    specs = plan(n_patients, images_per_study, abnormal_rate, seed)
    root = _draw.prepare_out_dir(out_dir)
    jobs = [(s.path, (s.study, s.image_seed, difficulty)) for s in specs]
    _draw.render_all(_render_job, jobs, root, image_size=image_size, workers=workers, desc=f"generate {_NAME}")
    table = _table(specs)
    _draw.write_index(root, table)
    return table
