"""Paired comparisons of recipes on the same test images (comparisons.csv) and the stage winners with their
margins over the runner-up (stages.csv), from the summary and the bootstrap replicates."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl import figures as figplan
from smalldl import stats
from smalldl.config import AXES as RECIPE_AXES
from smalldl.config import Recipe
from smalldl.errors import InputError
from smalldl.results.intervals import run_scores
from smalldl.stages import best_candidate
from smalldl.utils import progress

# -------------------------------------------------------------------------------------- comparisons


def _recipe(name: str) -> Recipe | None:
    try:
        return Recipe.parse(name)
    except InputError:
        return None


def pair_axis(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """What a comparison of units a and b (dicts with family, arch, recipe) is about: a recipe axis (same
    arch, recipes differing only in it), 'arch' (same recipe, two CNN architectures), 'family' (a CNN vs a
    radiomics model), or None (not compared)."""
    fam_a, fam_b = a.get("family", "cnn"), b.get("family", "cnn")
    if fam_a != fam_b:
        return "family"
    if fam_a != "cnn":
        return None
    if a["arch"] != b["arch"]:
        return "arch" if a["recipe"] == b["recipe"] else None
    ra, rb = _recipe(a["recipe"]), _recipe(b["recipe"])
    if ra is None or rb is None or ra == rb:
        return None
    for axis in RECIPE_AXES:
        if getattr(ra, axis) != getattr(rb, axis) and figplan.axis_matches(axis, ra, rb):
            return axis
    return None


def _radiomics_units(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Radiomics units to compare: per feature set (arch) the 'best' model if there is one, else all."""
    rad = [u for u in units if u["family"] != "cnn"]
    with_best = {u["arch"] for u in rad if u["recipe"] == "best"}
    return [u for u in rad if u["arch"] not in with_best or u["recipe"] == "best"]


def comparison_pairs(summary: pd.DataFrame) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    """Pairs of units of one task that the study compares (see ``pair_axis``), in a stable order."""
    pairs = []
    for _, part in summary.groupby("task", sort=True):
        units = part[["family", "task", "arch", "recipe"]].drop_duplicates().to_dict("records")
        cnn = [u for u in units if u["family"] == "cnn"]
        candidates = cnn + _radiomics_units(units)
        for i, a in enumerate(candidates):
            for b in candidates[i + 1 :]:
                axis = pair_axis(a, b)
                if axis:
                    pairs.append((a, b, axis))
    return pairs


def _delong_shared_variance(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> float:
    """DeLong's estimate of the test images' shared variance of the per-seed differences A_s - B_s (run i of
    A paired with run i of B, all on the images they share; binary tasks): the mean covariance over pairs of
    seeds (``stats.shared_test_variance``'s quantity, from DeLong's covariance instead of the bootstrap).
    NaN where DeLong does not apply (multilabel, fewer than 4 shared images or two of a class)."""
    runs = runs_a + runs_b
    k = len(runs_a)
    if k < 2 or any(r["y"].shape[1] != 1 for r in runs):
        return math.nan
    common = runs[0]["image_id"]
    for r in runs[1:]:
        common = np.intersect1d(common, r["image_id"])
    if common.size < 4:
        return math.nan
    scores, y = [], None
    for r in runs:
        order = np.argsort(r["image_id"])
        pos = order[np.searchsorted(r["image_id"], common, sorter=order)]
        scores.append(r["p"][pos, 0])
        y = r["y"][pos, 0] if y is None else y
    try:
        _, cov = stats.delong(y, np.stack(scores))
    except ValueError:
        return math.nan
    g = np.zeros((k, 2 * k))
    g[np.arange(k), np.arange(k)] = 1.0
    g[np.arange(k), k + np.arange(k)] = -1.0
    c = g @ cov @ g.T
    return float(max(0.0, (c.sum() - np.trace(c)) / (k * (k - 1))))


def paired_units(
    ga: pd.DataFrame, gb: pd.DataFrame, units: Sequence[tuple[Any, Any]], reps: np.ndarray, index: Mapping[str, int],
    column: str = "headline_auc",
) -> tuple[dict, dict, dict]:  # fmt: skip
    """Per (n, seed) unit: (value, replicates) of side A, of side B and of their difference A - B."""
    a, b, d = {}, {}, {}
    for u in units:
        ra, rb = ga.loc[u], gb.loc[u]
        xa, xb = reps[index[ra["path"]]].astype(np.float64), reps[index[rb["path"]]].astype(np.float64)
        va, vb = float(ra[column]), float(rb[column])
        a[u], b[u], d[u] = (va, xa), (vb, xb), (va - vb, xa - xb)
    return a, b, d


def compare(
    summary: pd.DataFrame,
    keys: Sequence[str],
    reps: np.ndarray,
    level: float,
    method: str = "bootstrap",
    metric: str = "test_auc_tta",
    loader: Callable[[Mapping[str, Any], str], dict[str, Any]] | None = run_scores,
    pairs: Sequence[tuple[Any, ...]] | None = None,
) -> pd.DataFrame:
    """Paired comparisons of units on the same test images, per training size and, with several sizes, over
    all sizes ('all'). The training run is the unit of inference: the difference is the mean over seeds of
    each seed's AUC(a) - AUC(b) (averaged over its sizes for 'all': a seed's nested subsets make its runs
    one unit), and its interval and p-value (``stats.paired_interval``: t over seeds, plus the test images'
    shared variance) include the variation between training runs and of the test patients. With fewer than
    ``stats.MIN_RUNS`` seeds the interval covers the test images only (``band`` 'test') and ``p`` is NaN:
    no test rests on it. ``method`` 'delong': the test part of the variance from DeLong's covariance (per
    size, single-label tasks; the bootstrap elsewhere). ``p_holm``: Holm-adjusted within each task.
    ``pairs``: the (a, b, axis) to compare (default ``comparison_pairs``); a fourth item restricts a pair to
    one size (a training size, or 'all': over all sizes, the one size if there is only one)."""
    index = {k: i for i, k in enumerate(keys)}
    cache: dict[str, dict[str, Any]] = {}

    def scores_of(row: Mapping[str, Any]) -> dict[str, Any]:
        if row["path"] not in cache:
            cache[row["path"]] = loader(row, metric)  # type: ignore[misc]
        return cache[row["path"]]

    by_unit = {k: g for k, g in summary.groupby(["task", "arch", "recipe"], sort=False)}
    rows = []
    for a, b, axis, *only in progress(
        comparison_pairs(summary) if pairs is None else pairs, desc="compare", unit="pair"
    ):
        ga = by_unit[(a["task"], a["arch"], a["recipe"])].set_index(["n", "seed"])
        gb = by_unit[(b["task"], b["arch"], b["recipe"])].set_index(["n", "seed"])
        common = ga.index.intersection(gb.index).sort_values()
        if common.empty:
            continue
        sizes: list[Any] = sorted({n for n, _ in common})
        wanted = [*sizes, "all"] if len(sizes) > 1 else sizes
        if only:
            wanted = [n for n in wanted if n == only[0] or (only[0] == "all" and len(sizes) == 1)]
        for n in wanted:
            units = [u for u in common if n == "all" or u[0] == n]
            side_a, side_b, diffs = paired_units(ga, gb, units, reps, index)
            shared = None
            if method == "delong" and loader is not None and (n != "all" or len(sizes) == 1):
                seeds = sorted(units, key=lambda u: str(u[1]))
                shared = _delong_shared_variance(
                    [scores_of(ga.loc[u]) for u in seeds], [scores_of(gb.loc[u]) for u in seeds]
                )
                shared = None if math.isnan(shared) else shared
            ci = stats.paired_interval(diffs, level, test_variance=shared)
            mean_a = stats.seed_mean(side_a)
            mean_b = stats.seed_mean(side_b)
            p = ci.p_two_sided(0.0) if ci.decidable else math.nan
            rows.append(
                {
                    "task": a["task"],
                    "axis": axis,
                    "n": n,
                    "family_a": a["family"],
                    "arch_a": a["arch"],
                    "recipe_a": a["recipe"],
                    "family_b": b["family"],
                    "arch_b": b["arch"],
                    "recipe_b": b["recipe"],
                    "runs": len(units),
                    "seeds": ci.runs,
                    "auc_a": mean_a,
                    "auc_b": mean_b,
                    "diff": ci.estimate,
                    "diff_lo": ci.lo,
                    "diff_hi": ci.hi,
                    "se": ci.se,
                    "df": ci.df,
                    "band": ci.band,
                    "p": p,
                    "p_method": "delong" if shared is not None else "bootstrap",
                }
            )
    columns = [
        "task", "axis", "n", "family_a", "arch_a", "recipe_a", "family_b", "arch_b", "recipe_b", "runs", "seeds",
        "auc_a", "auc_b", "diff", "diff_lo", "diff_hi", "se", "df", "band", "p", "p_method", "p_holm",
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns[:-1])
    table["p_holm"] = np.nan
    for _, part in table.groupby("task"):
        table.loc[part.index, "p_holm"] = stats.holm(part["p"].to_numpy(dtype=float))
    return table[columns]


# ------------------------------------------------------------------------------------------- stages


def read_stage(path: str | Path) -> dict[str, Any]:
    """A stage file ({stage, axis, candidates, scores, runs, winner, previous, select_on}); task and arch
    come from the file or its path results/stages/{task}/{arch}/stage{k}.json."""
    try:
        spec = json.loads(Path(path).read_text())
        for key in ("stage", "axis", "candidates", "winner"):
            spec[key]  # noqa: B018
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"stage file {path} cannot be read ({exc})") from None
    except (KeyError, TypeError) as exc:
        raise InputError(f"stage file {path}: missing key {exc}") from None
    parts = Path(path).parts
    spec.setdefault("task", parts[-3] if len(parts) >= 3 else None)
    spec.setdefault("arch", parts[-2] if len(parts) >= 2 else None)
    return spec


def stage_specs(
    summary: pd.DataFrame,
    stages: Sequence[Mapping[str, Any]],
    figures: Mapping[str, Mapping[str, Any]],
    select_on: str,
) -> list[dict[str, Any]]:
    """The stages: every stage file's content (``read_stage``), plus, for each axis figure drawn from listed
    recipes (no stage varies that axis), a 'stage' per task and architecture among that group with the
    winner on validation."""
    specs = [dict(s) for s in stages]
    for fig in figures.values():
        if fig["kind"] != "axis" or fig.get("stage") is not None:
            continue
        for task in sorted(summary["task"].unique()):
            for arch in fig["archs"]:
                part = summary[(summary["task"] == task) & (summary["arch"] == arch)]
                part = part[part["recipe"].isin(fig["recipes"])]
                scores = part.groupby("recipe")["select_auc"].mean().dropna()
                if len(scores) < 2:
                    continue
                order = [r for r in fig["recipes"] if r in scores.index]
                values = {r: float(scores[r]) for r in order}
                specs.append(
                    {
                        "task": task,
                        "arch": arch,
                        "stage": None,
                        "axis": fig["axis"],
                        "candidates": order,
                        "scores": values,
                        "winner": best_candidate(values, order),
                        "select_on": select_on,
                    }
                )
    return specs


def stage_table(
    summary: pd.DataFrame,
    keys: Sequence[str],
    reps: np.ndarray,
    specs: Sequence[Mapping[str, Any]],
    level: float,
) -> pd.DataFrame:
    """Per stage: the winner, the runner-up, the margin on validation AUC (mean over seeds of each seed's
    mean paired difference over its sizes; t-interval over seeds: the validation images are the selection's
    own, fixed) and on test AUC (``stats.paired_interval``: seeds and test patients; p NaN with fewer than
    ``stats.MIN_RUNS`` seeds)."""
    index = {k: i for i, k in enumerate(keys)}
    rows = []
    for spec in specs:
        task, arch, winner = spec["task"], spec["arch"], spec["winner"]
        part = summary[(summary["task"] == task) & (summary["arch"] == arch)]
        scores = {r: math.nan if v is None else float(v) for r, v in (spec.get("scores") or {}).items()}
        for r in spec["candidates"]:
            if r not in scores:
                scores[r] = float(part.loc[part["recipe"] == r, "select_auc"].mean())
        runner = best_candidate(scores, [r for r in spec["candidates"] if r != winner])
        row: dict[str, Any] = {
            "task": task,
            "arch": arch,
            "stage": None if spec.get("stage") is None else int(spec["stage"]) + 1,
            "axis": spec["axis"],
            "candidates": ";".join(spec["candidates"]),
            "select_on": spec.get("select_on"),
            "winner": winner,
            "runner_up": runner,
            "winner_val": scores.get(winner),
            "runner_up_val": scores.get(runner) if runner else None,
        }
        if runner is not None:
            ga = part[part["recipe"] == winner].set_index(["n", "seed"])
            gb = part[part["recipe"] == runner].set_index(["n", "seed"])
            common = ga.index.intersection(gb.index).sort_values()
            d_val = {u: float(ga.loc[u, "select_auc"]) - float(gb.loc[u, "select_auc"]) for u in common}
            val = stats.paired_seed_interval(d_val, level)
            row["val_margin"], row["val_margin_lo"], row["val_margin_hi"] = val.estimate, val.lo, val.hi
            if len(common):
                side_a, side_b, diffs = paired_units(ga, gb, common, reps, index)
                test = stats.paired_interval(diffs, level)
                row["test_winner"] = stats.seed_mean(side_a)
                row["test_runner_up"] = stats.seed_mean(side_b)
                row["test_margin"], row["test_margin_lo"], row["test_margin_hi"] = test.estimate, test.lo, test.hi
                row["test_p"] = test.p_two_sided(0.0) if test.decidable else math.nan
                row["band"] = test.band
            row["runs"] = len(common)
            row["seeds"] = val.runs
        rows.append(row)
    columns = [
        "task", "arch", "stage", "axis", "candidates", "select_on", "winner", "runner_up", "winner_val",
        "runner_up_val", "val_margin", "val_margin_lo", "val_margin_hi", "test_winner", "test_runner_up",
        "test_margin", "test_margin_lo", "test_margin_hi", "test_p", "band", "runs", "seeds",
    ]  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=columns)
