"""The paper's qualitative findings tested on the runs the study has (findings.csv).

Each claim of Romero et al. (PAPER.md, "Findings to reproduce") is a relation between two sides, e.g.
one-cycle >= regular. Its evidence is a difference of test AUCs, side A minus side B, on the same test
images, per training size and pooled over sizes. The training run is the unit of inference: the
difference is a mean over seeds (a seed's runs at several sizes averaged first: they share its nested
training subsets), and its interval and p-values include the variation between training runs (t over the
seeds) and of the test patients (their shared variance, from the paired bootstrap): the rows of
comparisons.csv (``comparisons.compare``) or, for the claims about more than two recipes, the runs'
bootstrap replicates (bootstrap.npz) with a jackknife over seeds. With fewer than ``stats.MIN_RUNS``
seeds there is no verdict: ``too few runs``.

The verdict (``decide``) rests on one-sided tests against the claim's threshold, m being
``results.equivalence_margin``; each is read at 1 − results.ci two-sided, so that an unadjusted verdict
is the CI's position (``verdict``):

- ``>``  holds when the difference is above 0 and its estimate above m (``negligible``: above 0, but by
  less than m, a real but negligible gap); contradicted when it is below 0;
- ``>=`` (non-inferiority) holds when the difference is above −m; contradicted when it is below −m;
- ``≈``  (equivalence, two one-sided tests) holds when it is within ±m; contradicted when it is outside;
- ``>>`` (much better) holds when it is above m; contradicted when it is below m;
- else inconclusive.

Multiplicity: the pooled rows (``pooled_claims``: what results/README.md and the top-level README tally)
are the confirmatory family, their verdicts decided on Holm-adjusted p-values (``p_holm``) over the
family; the per-size rows are exploratory (``scope``), their verdicts unadjusted. A claim with no runs to
test it on a (task, arch) is one row ``not run``, saying what it needs, never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from smalldl import figures as figplan
from smalldl import stats
from smalldl.config import NO_SOURCE, Recipe
from smalldl.errors import InputError
from smalldl.utils import as_number

VERDICTS = ("holds", "negligible", "contradicted", "inconclusive", "too few runs", "not run")
MOMENTS = ("moments", "momentsconv")
COLUMNS = [
    "claim", "statement", "task", "arch", "n", "comparison", "a", "b", "difference", "ci_lo", "ci_hi", "se",
    "df", "band", "runs", "seeds", "p_holds", "p_contradicted", "p", "p_holm", "scope", "verdict", "note",
]  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """One claim: side A ``relation`` side B; ``needs``: the runs it is tested on (the note of 'not run')."""

    id: str
    statement: str
    relation: str  # '>', '>=', '≈', '>>'
    needs: str


_EQUAL = "other axes equal"
CLAIMS = tuple(
    Claim(*spec)
    for spec in (
        ("schedule", "one-cycle >= regular", ">=", f"one-cycle and regular runs, {_EQUAL}"),
        ("finetune_vs_gradual", "fine-tune all ≈ gradual unfreezing", "≈", f"finetune and gradual runs, {_EQUAL}"),
        ("finetune_vs_extractor", "fine-tune all > feature extractor", ">", f"finetune and extractor runs, {_EQUAL}"),
        (
            "gradual_vs_extractor",
            "gradual unfreezing > feature extractor",
            ">",
            f"gradual and extractor runs, {_EQUAL}",
        ),
        (
            "transfer_vs_training",
            "transfer-method effect > training-method effect",
            ">",
            "group of recipes differing only in the transfer method and one differing only in the schedule",
        ),
        (
            "same_vs_imagenet",
            "same-anatomy source > ImageNet (natural images)",
            ">",
            f"runs from a same-anatomy and from a natural-image source (init transfer), {_EQUAL}",
        ),
        (
            "imagenet_vs_other",
            "ImageNet (natural images) ≈ other-anatomy source",
            "≈",
            f"runs from a natural-image and from an other-anatomy source (init transfer), {_EQUAL}",
        ),
        (
            "source_vs_none",
            "a source > none (from scratch)",
            ">",
            "runs from a source (init transfer) and from scratch with the same schedule",
        ),
        (
            "gain_smallest_n",
            "the gain of a source over none is largest at the smallest n",
            ">",
            "source and scratch runs at two or more training sizes",
        ),
        (
            "moments_vs_default",
            "moment-preserving init ≈ default (scratch)",
            "≈",
            "runs with init moments or momentsconv and from scratch with the same schedule",
        ),
        (
            "transfer_vs_moments",
            "transfer >> moment-preserving init",
            ">>",
            f"runs with init transfer and with moments or momentsconv from the same source, {_EQUAL}",
        ),
        (
            "radiomics_vs_scratch",
            "radiomics > scratch CNN at the smallest n",
            ">",
            "radiomics runs and CNN runs from scratch (radiomics.featuresets)",
        ),
        (
            "transfer_vs_radiomics",
            "transfer CNN > radiomics",
            ">",
            "radiomics runs and CNN runs from a source (radiomics.featuresets)",
        ),
        (
            "n_needed",
            "the target AUC is reached within the sizes run",
            ">=",
            "learning curves (runs at two or more training sizes)",
        ),
    )
)
CLAIM = {c.id: c for c in CLAIMS}


# ------------------------------------------------------------------------------------------- verdicts


def verdict(relation: str, lo: float, hi: float, margin: float, estimate: float | None = None) -> str:
    """The CI [lo, hi] of side A minus side B read against the claim (module docstring; an unadjusted
    verdict): what ``decide`` gives on the unadjusted p-values of a t-interval. ``estimate`` (default: the
    midpoint) tells a real gap from a negligible one for ``>``."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    est = (lo + hi) / 2 if estimate is None or math.isnan(estimate) else estimate
    if relation == ">":
        return ("holds" if est > margin else "negligible") if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
    if relation == ">=":
        return "holds" if lo > -margin else "contradicted" if hi < -margin else "inconclusive"
    if relation == "≈":
        if lo > -margin and hi < margin:
            return "holds"
        return "contradicted" if lo > margin or hi < -margin else "inconclusive"
    if relation == ">>":
        return "holds" if lo > margin else "contradicted" if hi < margin else "inconclusive"
    raise ValueError(f"unknown relation {relation!r}")


def test_pvalues(relation: str, ci: stats.RunInterval, margin: float) -> tuple[float, float]:
    """(p_holds, p_contradicted): the p-values of the one-sided tests behind 'holds' and 'contradicted'
    (for ≈, holds: the larger of the two one-sided tests' p, TOST; contradicted: the smaller), doubled so
    that each is read at 1 − results.ci as the two-sided interval is. NaN without a decidable interval."""
    if not ci.decidable:
        return math.nan, math.nan
    m = margin
    if relation == ">":
        p_h, p_c = ci.p_above(0.0), ci.p_below(0.0)
    elif relation == ">=":
        p_h, p_c = ci.p_above(-m), ci.p_below(-m)
    elif relation == "≈":
        p_h, p_c = max(ci.p_above(-m), ci.p_below(m)), min(ci.p_above(m), ci.p_below(-m))
    elif relation == ">>":
        p_h, p_c = ci.p_above(m), ci.p_below(m)
    else:
        raise ValueError(f"unknown relation {relation!r}")
    return min(1.0, 2.0 * p_h), min(1.0, 2.0 * p_c)


def decide(relation: str, estimate: float, p_holds: float, p_contradicted: float, alpha: float, margin: float) -> str:
    """The verdict from the (possibly Holm-adjusted) p-values of ``test_pvalues`` at level ``alpha``."""
    if math.isnan(p_holds) or math.isnan(p_contradicted):
        return "inconclusive"
    if min(p_holds, p_contradicted) >= alpha:
        return "inconclusive"
    if p_holds <= p_contradicted:
        return "negligible" if relation == ">" and not estimate > margin else "holds"
    return "contradicted"


# ------------------------------------------------------------------------------------------- sides


@dataclass(frozen=True)
class Unit:
    """One side of a comparison: a CNN recipe on an architecture, or a radiomics model (arch = feature set)."""

    family: str
    arch: str
    recipe: str

    @property
    def r(self) -> Recipe | None:
        if self.family != "cnn":
            return None
        try:
            return Recipe.parse(self.recipe)
        except InputError:
            return None

    @property
    def label(self) -> str:
        return self.recipe if self.family == "cnn" else f"{self.arch}/{self.recipe}"


Anatomy = Mapping[str, str | None]  # source -> same | other | natural | None (unknown), for one target


def _differ_only(axis: str, a: Recipe, b: Recipe) -> bool:
    return getattr(a, axis) != getattr(b, axis) and figplan.axis_matches(axis, a, b)


def _cnn_pair(x: Unit, y: Unit) -> tuple[Recipe, Recipe] | None:
    rx, ry = x.r, y.r
    return (rx, ry) if rx is not None and ry is not None and x.arch == y.arch else None


def _transfer_pair(first: str, second: str) -> Callable[[Unit, Unit, Anatomy], bool]:
    def match(x: Unit, y: Unit, anatomy: Anatomy) -> bool:
        pair = _cnn_pair(x, y)
        return (
            bool(pair) and pair[0].transfer == first and pair[1].transfer == second and _differ_only("transfer", *pair)
        )

    return match


def _source_pair(first: str, second: str) -> Callable[[Unit, Unit, Anatomy], bool]:
    """Side A from a source of anatomy class ``first``, side B from one of class ``second``, init transfer."""

    def match(x: Unit, y: Unit, anatomy: Anatomy) -> bool:
        pair = _cnn_pair(x, y)
        if not pair or NO_SOURCE in (pair[0].source, pair[1].source) or pair[0].init != "transfer":
            return False
        classes = anatomy.get(pair[0].source), anatomy.get(pair[1].source)
        return classes == (first, second) and _differ_only("source", *pair)

    return match


def _schedule(x: Unit, y: Unit, anatomy: Anatomy) -> bool:
    pair = _cnn_pair(x, y)
    return (
        bool(pair)
        and (pair[0].schedule, pair[1].schedule) == ("onecycle", "regular")
        and _differ_only("schedule", *pair)
    )


def _source_vs_none(x: Unit, y: Unit, anatomy: Anatomy) -> bool:
    pair = _cnn_pair(x, y)
    return (
        bool(pair)
        and pair[0].source != NO_SOURCE
        and pair[0].init == "transfer"
        and pair[1].source == NO_SOURCE
        and _differ_only("source", *pair)
    )


def _moments_vs_default(x: Unit, y: Unit, anatomy: Anatomy) -> bool:
    pair = _cnn_pair(x, y)
    return (
        bool(pair) and pair[0].init in MOMENTS and pair[1].source == NO_SOURCE and pair[0].schedule == pair[1].schedule
    )


def _transfer_vs_moments(x: Unit, y: Unit, anatomy: Anatomy) -> bool:
    pair = _cnn_pair(x, y)
    return bool(pair) and pair[0].init == "transfer" and pair[1].init in MOMENTS and _differ_only("init", *pair)


#: Claims tested on the rows of comparisons.csv: whether unit x is the claim's side A and y its side B.
PAIR_CLAIMS: dict[str, Callable[[Unit, Unit, Anatomy], bool]] = {
    "schedule": _schedule,
    "finetune_vs_gradual": _transfer_pair("finetune", "gradual"),
    "finetune_vs_extractor": _transfer_pair("finetune", "extractor"),
    "gradual_vs_extractor": _transfer_pair("gradual", "extractor"),
    "same_vs_imagenet": _source_pair("same", "natural"),
    "imagenet_vs_other": _source_pair("natural", "other"),
    "source_vs_none": _source_vs_none,
    "moments_vs_default": _moments_vs_default,
    "transfer_vs_moments": _transfer_vs_moments,
}


# --------------------------------------------------------------------------------------------- rows


def _n_key(n: Any) -> tuple[int, float]:
    return (1, math.inf) if str(n) == "all" else (0, float(n))


def _row(
    claim: Claim,
    task: str,
    arch: str,
    n: Any,
    sides: tuple[str, str],
    ci: stats.RunInterval,
    margin: float,
    *,
    runs: Any = None,
    note: str = "",
    comparison: str | None = None,
) -> dict[str, Any]:
    """A row of findings.csv: side A minus side B (``sides``) and its interval ``ci``; the verdict is set
    by ``findings`` once the family is known (``_judge``)."""
    a, b = sides
    p_h, p_c = test_pvalues(claim.relation, ci, margin)
    return {
        "claim": claim.id,
        "statement": claim.statement,
        "task": task,
        "arch": arch,
        "n": str(n),
        "comparison": comparison or f"{a} vs {b}",
        "a": a,
        "b": b,
        "difference": ci.estimate,
        "ci_lo": ci.lo,
        "ci_hi": ci.hi,
        "se": ci.se,
        "df": ci.df,
        "band": ci.band,
        "runs": runs,
        "seeds": ci.runs,
        "p_holds": p_h,
        "p_contradicted": p_c,
        "p": min(p_h, p_c) if not (math.isnan(p_h) or math.isnan(p_c)) else math.nan,
        "verdict": None,
        "note": note if not (math.isnan(ci.lo) or math.isnan(ci.hi)) else (note + "; " if note else "") + "no CI",
    }


def _not_run(claim: Claim, task: str, arch: str, why: str = "") -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS, None)
    row.update(
        {
            "claim": claim.id,
            "statement": claim.statement,
            "task": task,
            "arch": arch,
            "n": "all",
            "verdict": "not run",
            "note": why or f"the study has no {claim.needs}",
        }
    )
    return row


def comparison_interval(row: Mapping[str, Any], sign: int = 1) -> stats.RunInterval:
    """The ``stats.RunInterval`` of a comparisons.csv row (diff, diff_lo, diff_hi, se, df, seeds, band), as
    side A minus side B (``sign`` 1) or turned round (-1)."""

    def num(key: str) -> float:
        return as_number(row.get(key))

    d, lo, hi = num("diff"), num("diff_lo"), num("diff_hi")
    if sign < 0:
        d, lo, hi = -d, -hi, -lo
    seeds = num("seeds")
    return stats.RunInterval(
        d, num("se"), num("df"), lo, hi, 0 if math.isnan(seeds) else int(seeds), str(row.get("band") or "test")
    )


def _oriented_row(
    claim: Claim,
    task: str,
    arch: str,
    rec: Mapping[str, Any],
    units: tuple[Unit, Unit],
    sign: int,
    margin: float,
    **extra: Any,
) -> dict[str, Any]:
    """The findings row of a comparisons.csv row ``rec`` of ``units`` (its sides A, B), oriented as the claim:
    ``sign`` 1 keeps A minus B, -1 turns it round."""
    a, b = units if sign > 0 else units[::-1]
    ci = comparison_interval(rec, sign)
    return _row(claim, task, arch, rec["n"], (a.label, b.label), ci, margin, runs=rec["runs"], **extra)


def _units(row: Mapping[str, Any]) -> tuple[Unit, Unit]:
    return (
        Unit(str(row["family_a"]), str(row["arch_a"]), str(row["recipe_a"])),
        Unit(str(row["family_b"]), str(row["arch_b"]), str(row["recipe_b"])),
    )


def pair_rows(
    comparisons: pd.DataFrame, claim_id: str, task: str, arch: str, anatomy: Anatomy, margin: float
) -> list[dict[str, Any]]:
    """The rows of a pairwise claim on (task, arch): every comparison whose sides match the claim, per size
    and pooled, oriented as side A minus side B."""
    claim, match = CLAIM[claim_id], PAIR_CLAIMS[claim_id]
    rows = []
    part = comparisons[comparisons["task"] == task] if len(comparisons) else comparisons
    for rec in part.to_dict("records"):
        x, y = _units(rec)
        if x.arch != arch:
            continue
        sign = 1 if match(x, y, anatomy) else -1 if match(y, x, anatomy) else 0
        if not sign:
            continue
        rows.append(_oriented_row(claim, task, arch, rec, (x, y), sign, margin))
    return rows


def _best_by_validation(summary: pd.DataFrame, task: str, arch: str, keep: Callable[[Recipe], bool]) -> str | None:
    """The CNN recipe of (task, arch) that ``keep`` accepts with the highest mean validation AUC (what a user
    would pick without looking at the test set); None without one."""
    part = summary[(summary["task"] == task) & (summary["arch"] == arch) & (summary["family"] == "cnn")]
    scores = {}
    for recipe, g in part.groupby("recipe", sort=True):
        r = Unit("cnn", arch, str(recipe)).r
        if r is not None and keep(r):
            scores[str(recipe)] = float(pd.to_numeric(g["select_auc"], errors="coerce").mean())
    ranked = [r for r in scores if not math.isnan(scores[r])]
    return max(ranked, key=lambda r: scores[r]) if ranked else None


def radiomics_rows(
    summary: pd.DataFrame, comparisons: pd.DataFrame, claim_id: str, task: str, arch: str, margin: float
) -> list[dict[str, Any]]:
    """CNN vs radiomics: the CNN is the best recipe on validation among the scratch recipes
    (radiomics_vs_scratch, at the smallest size) or the transfer recipes (a source, init transfer:
    transfer_vs_radiomics)."""
    claim = CLAIM[claim_id]
    scratch = claim_id == "radiomics_vs_scratch"
    cnn = _best_by_validation(
        summary,
        task,
        arch,
        (lambda r: r.source == NO_SOURCE) if scratch else (lambda r: r.source != NO_SOURCE and r.init == "transfer"),
    )
    if cnn is None or not len(comparisons):
        return []
    rows = []
    for rec in comparisons[comparisons["task"] == task].to_dict("records"):
        x, y = _units(rec)
        if {x.family, y.family} == {"cnn"} or "cnn" not in (x.family, y.family):
            continue
        cnn_side, rad = (x, y) if x.family == "cnn" else (y, x)
        if (cnn_side.arch, cnn_side.recipe) != (arch, cnn):
            continue
        sign = 1 if (rad is x) == scratch else -1  # side A: radiomics (scratch claim) or the CNN
        note = f"the {'scratch' if scratch else 'transfer'} CNN recipe with the best validation AUC"
        rows.append(_oriented_row(claim, task, arch, rec, (x, y), sign, margin, note=note))
    if scratch and rows:
        sized = [r for r in rows if r["n"] != "all"]
        smallest = min((float(r["n"]) for r in sized), default=None)
        rows = [r for r in sized if float(r["n"]) == smallest]
    return rows


# ------------------------------------------------------------------------------ from the replicates


class Replicates:
    """The runs of a task and their bootstrap replicates (paired across the runs of a task)."""

    def __init__(self, summary: pd.DataFrame, keys: Sequence[str], reps: np.ndarray) -> None:
        self.summary = summary
        self.index = {k: i for i, k in enumerate(keys)}
        self.reps = reps

    def runs(self, task: str, arch: str, recipe: str) -> dict[tuple[int, int], tuple[float, np.ndarray]]:
        """(n, seed) -> (headline AUC, replicates) of one recipe's runs."""
        s = self.summary
        part = s[(s["task"] == task) & (s["arch"] == arch) & (s["recipe"] == recipe)]
        out = {}
        for rec in part.to_dict("records"):
            if rec["path"] not in self.index:
                raise InputError(f"bootstrap replicates lack run {rec['path']}; rerun rule bootstrap")
            out[(int(rec["n"]), int(rec["seed"]))] = (float(rec["headline_auc"]), self.reps[self.index[rec["path"]]])
        return out


def _mean(runs: Mapping[tuple[int, int], tuple[float, np.ndarray]], units: Sequence[tuple[int, int]]):
    return (
        float(np.mean([runs[u][0] for u in units])),
        np.mean(np.stack([runs[u][1] for u in units]).astype(np.float64), axis=0),
    )


def _spread(means: Sequence[tuple[float, np.ndarray]]) -> tuple[float, np.ndarray]:
    points = [m[0] for m in means]
    reps = np.stack([m[1] for m in means])
    return max(points) - min(points), reps.max(axis=0) - reps.min(axis=0)


def _sizes_then_all(units: Sequence[tuple[int, int]]) -> list[Any]:
    sizes: list[Any] = sorted({n for n, _ in units})
    return [*sizes, "all"] if len(sizes) > 1 else sizes


def transfer_vs_training_rows(
    replicates: Replicates, task: str, arch: str, level: float, margin: float
) -> list[dict[str, Any]]:
    """The transfer-method effect (max - min of the mean AUCs over the largest group of recipes that differ
    only in the transfer method) minus the training-method effect (the same over the group differing only
    in the schedule), on the (n, seed) runs every recipe of both groups has, per size and pooled. Interval
    (``stats.run_interval``): the jackknife over seeds for the runs, the statistic on each test bootstrap
    replicate for the test patients (added whole: conservative for this non-linear statistic)."""
    claim = CLAIM["transfer_vs_training"]
    s = replicates.summary
    part = s[(s["task"] == task) & (s["arch"] == arch) & (s["family"] == "cnn")]
    recipes = [r for r in (Unit("cnn", arch, str(x)).r for x in part["recipe"].unique()) if r is not None]
    transfer = figplan.axis_group(recipes, "transfer")
    schedule = figplan.axis_group(recipes, "schedule")
    if not transfer or not schedule:
        return []
    runs = {r: replicates.runs(task, arch, r) for r in dict.fromkeys([*transfer, *schedule])}
    common = sorted(set.intersection(*(set(v) for v in runs.values())))
    if not common:
        return []
    t_axis = ", ".join(Recipe.parse(r).transfer for r in transfer)
    s_axis = ", ".join(Recipe.parse(r).schedule for r in schedule)
    comparison = f"spread over transfer methods ({t_axis}) vs over schedules ({s_axis})"

    def statistic(units: Sequence[tuple[int, int]]) -> tuple[float, np.ndarray, float, float]:
        t_point, t_reps = _spread([_mean(runs[r], units) for r in transfer])
        s_point, s_reps = _spread([_mean(runs[r], units) for r in schedule])
        return t_point - s_point, t_reps - s_reps, t_point, s_point

    rows = []
    for n in _sizes_then_all(common):
        units = [u for u in common if n == "all" or u[0] == n]
        seeds = sorted({seed for _, seed in units})
        point, reps, t_point, s_point = statistic(units)
        loo = [statistic([u for u in units if u[1] != seed])[0] for seed in seeds] if len(seeds) > 1 else []
        ci = stats.run_interval(point, loo, reps, level, bounds=(-1.0, 1.0))
        note = f"spreads (max - min of mean AUC): transfer {t_point:.3f} over 3 recipes at most, schedule {s_point:.3f}"
        rows.append(
            _row(
                claim,
                task,
                arch,
                n,
                (";".join(transfer), ";".join(schedule)),
                ci,
                margin,
                runs=len(units),
                note=note,
                comparison=comparison,
            )
        )
    return rows


def gain_rows(
    replicates: Replicates, pairs: Sequence[tuple[str, str]], task: str, arch: str, level: float, margin: float
) -> list[dict[str, Any]]:
    """For each (source recipe, scratch recipe) pair: its gain (source - scratch) at the smallest size minus
    its gain at the largest, per seed (a seed's two sizes share its nested subsets), then the mean over the
    seeds that ran both sizes with ``stats.paired_interval`` (seeds and test patients)."""
    claim = CLAIM["gain_smallest_n"]
    rows = []
    for source, scratch in pairs:
        ra, rb = replicates.runs(task, arch, source), replicates.runs(task, arch, scratch)
        common = sorted(set(ra) & set(rb))
        sizes = sorted({n for n, _ in common})
        if len(sizes) < 2:
            continue
        small, large = sizes[0], sizes[-1]
        seeds = sorted({seed for n, seed in common if (small, seed) in common and (large, seed) in common})
        units = {}
        for seed in seeds:
            (a0, x0), (b0, y0) = ra[(small, seed)], rb[(small, seed)]
            (a1, x1), (b1, y1) = ra[(large, seed)], rb[(large, seed)]
            units[("all", seed)] = ((a0 - b0) - (a1 - b1), (x0 - y0).astype(np.float64) - (x1 - y1).astype(np.float64))
        if not units:
            continue
        ci = stats.paired_interval(units, level)
        g_small = float(np.mean([ra[(small, sd)][0] - rb[(small, sd)][0] for sd in seeds]))
        g_large = float(np.mean([ra[(large, sd)][0] - rb[(large, sd)][0] for sd in seeds]))
        note = f"gain at n={small}: {g_small:.3f}; at n={large}: {g_large:.3f}"
        comparison = f"gain of {source} over {scratch}: n={small} vs n={large}"
        rows.append(
            _row(
                claim,
                task,
                arch,
                "all",
                (source, scratch),
                ci,
                margin,
                runs=2 * len(seeds),
                note=note,
                comparison=comparison,
            )
        )
    return rows


# ------------------------------------------------------------------------------------ learning curves


def n_needed_rows(curves: pd.DataFrame, task: str, arch: str, target: float, margin: float) -> list[dict[str, Any]]:
    """Per recipe of (task, arch) with a learning curve: the n needed for the target AUC with its interval;
    holds when the interval lies within the largest size run, contradicted when it lies beyond it."""
    claim = CLAIM["n_needed"]
    rows = []
    if curves is None or curves.empty:
        return rows
    part = curves[(curves["task"] == task) & (curves["arch"] == arch) & (curves["family"] == "cnn")]
    for rec in part.to_dict("records"):
        unit = Unit(str(rec["family"]), str(rec["arch"]), str(rec["recipe"]))
        if rec.get("status") != "ok":
            row = _not_run(claim, task, arch, f"{unit.label}: {rec.get('status')}")
            row["comparison"] = f"{unit.label} reaches AUC {target}"
            rows.append(row)
            continue
        max_n = float(rec["max_n"])
        need, lo, hi = (float(rec[k]) for k in ("n_target", "n_target_lo", "n_target_hi"))
        seeds = rec.get("seeds")
        band = str(rec.get("band") or stats.BAND_TEST)
        # the difference and CI columns hold the n needed and its interval
        ci = stats.RunInterval(need, math.nan, math.nan, lo, hi, int(seeds) if pd.notna(seeds) else 0, band)
        row = _row(
            claim,
            task,
            arch,
            "all",
            (unit.label, f"n={int(max_n)}"),
            ci,
            0.0,
            runs=rec.get("runs"),
            note=f"n needed {_n_text(need)} [{_n_text(lo)}, {_n_text(hi)}]; largest size run {int(max_n)}",
            comparison=f"{unit.label} reaches AUC {target} by n={int(max_n)}",
        )
        if band != stats.BAND_RUNS:
            row["verdict"] = "too few runs"
        elif not (math.isnan(lo) or math.isnan(hi)):
            row["verdict"] = "holds" if hi <= max_n else "contradicted" if lo > max_n else "inconclusive"
        else:
            row["verdict"] = "inconclusive"
        rows.append(row)
    return rows


def _n_text(x: float) -> str:
    return "–" if math.isnan(x) else "never" if math.isinf(x) else f"{x:,.0f}"


# ------------------------------------------------------------------------------------------ the table


def findings(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    keys: Sequence[str],
    reps: np.ndarray,
    curves: pd.DataFrame | None,
    anatomy: Mapping[str, Anatomy],
    settings: Mapping[str, Any],
    targets: Sequence[str] | None = None,
    archs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """findings.csv: every claim (``CLAIMS``) on every target and CNN architecture, one row per comparison
    and size (and pooled, ``n`` = 'all'), or one 'not run' row. ``anatomy``: target -> source -> same,
    other, natural or None (``config.source_anatomies``); ``settings``: results.ci, .equivalence_margin and
    .target_auc (None: no n_needed rows)."""
    level, margin, target = settings["ci"], settings["equivalence_margin"], settings.get("target_auc")
    cnn = summary[summary["family"] == "cnn"] if len(summary) else summary
    targets = list(targets) if targets is not None else sorted(summary["task"].unique()) if len(summary) else []
    archs = list(archs) if archs is not None else sorted(cnn["arch"].unique()) if len(cnn) else []
    replicates = Replicates(summary, keys, reps)
    has_radiomics = len(summary) > 0 and bool((summary["family"] != "cnn").any())
    out: list[dict[str, Any]] = []
    for claim in CLAIMS:
        if claim.id == "n_needed" and target is None:
            continue
        for task in targets:
            task_anatomy = anatomy.get(task, {})
            unknown = sorted(s for s, c in task_anatomy.items() if c is None)
            for arch in archs:
                why = ""
                if claim.id in PAIR_CLAIMS:
                    rows = pair_rows(comparisons, claim.id, task, arch, task_anatomy, margin)
                    if claim.id in ("same_vs_imagenet", "imagenet_vs_other") and unknown:
                        why = (
                            f"the study has no {claim.needs} (anatomy unknown: set sources.<name>.anatomy of "
                            f"{', '.join(unknown)})"
                        )
                elif claim.id in ("radiomics_vs_scratch", "transfer_vs_radiomics"):
                    rows = radiomics_rows(summary, comparisons, claim.id, task, arch, margin)
                    why = "" if has_radiomics else "the study has no radiomics runs (radiomics.featuresets)"
                elif claim.id == "transfer_vs_training":
                    rows = transfer_vs_training_rows(replicates, task, arch, level, margin)
                elif claim.id == "gain_smallest_n":
                    found = pair_rows(comparisons, "source_vs_none", task, arch, task_anatomy, margin)
                    pairs = list(dict.fromkeys((r["a"], r["b"]) for r in found))
                    rows = gain_rows(replicates, pairs, task, arch, level, margin)
                    if pairs and not rows:
                        why = "the source and scratch runs share fewer than two training sizes"
                else:
                    rows = n_needed_rows(curves, task, arch, target, margin)
                out += rows if rows else [_not_run(claim, task, arch, why)]
    table = pd.DataFrame(out, columns=COLUMNS)
    if table.empty:
        return table
    order = {c.id: i for i, c in enumerate(CLAIMS)}
    table["_c"] = table["claim"].map(order)
    table["_n"] = [_n_key(n) for n in table["n"]]
    table = table.sort_values(["_c", "task", "arch", "comparison", "_n"], kind="mergesort", na_position="first")
    table = table.drop(columns=["_c", "_n"]).reset_index(drop=True)
    return judge(table, 1.0 - level, margin)


def judge(table: pd.DataFrame, alpha: float, margin: float) -> pd.DataFrame:
    """The verdicts: 'too few runs' where the interval covers the test patients only; for the confirmatory
    family (``pooled_claims``'s rows) ``decide`` on the Holm-adjusted p-values over the family
    (``p_holm``); for the other rows (per size: ``scope`` exploratory) on the unadjusted ones. Rows that
    already have a verdict (not run, the sizes needed) keep it."""
    table = table.copy()
    table["scope"] = "exploratory"
    table["p_holm"] = np.nan
    open_rows = table["verdict"].isna()
    family = pooled_claims(table).index
    table.loc[family, "scope"] = "confirmatory"
    decidable = open_rows & (table["band"] == stats.BAND_RUNS) & table["p"].notna()
    chosen = [i for i in family if decidable.at[i]]
    if chosen:
        table.loc[chosen, "p_holm"] = stats.holm(table.loc[chosen, "p"].to_numpy(dtype=float))
    for i in table.index[open_rows]:
        r = table.loc[i]
        if r["band"] != stats.BAND_RUNS:
            table.at[i, "verdict"] = "too few runs"
            continue
        relation = CLAIM[r["claim"]].relation
        p_h, p_c = float(r["p_holds"]), float(r["p_contradicted"])
        if i in chosen:  # the row's p (its smaller one), adjusted, decides in the direction it came from
            p_h, p_c = (float(r["p_holm"]), 1.0) if p_h <= p_c else (1.0, float(r["p_holm"]))
        table.at[i, "verdict"] = decide(relation, float(r["difference"]), p_h, p_c, alpha, margin)
    return table


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (claim, task, arch, comparison): the pooled row ('all') where there is one, else the only
    size's (radiomics_vs_scratch: the smallest size's); 'not run' rows as they are."""
    if table.empty:
        return table
    keep = []
    for _, g in table.groupby(["claim", "task", "arch", "comparison"], sort=False, dropna=False):
        pooled = g[g["n"].astype(str) == "all"]
        keep.append(pooled.index[0] if len(pooled) else g.index[0])
    return table.loc[sorted(keep)]


def pooled_claims(table: pd.DataFrame) -> pd.DataFrame:
    """``headline`` of the paper's claims (the rows of ``n_needed``, a size per recipe, left out): what the
    findings sections of results/README.md and of the top-level README show."""
    return headline(table[table["claim"] != "n_needed"])
