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
from smalldl.utils import derive_seed, progress

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


def _delong_p(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> float:
    """DeLong p-value of mean(A seeds) - mean(B seeds) on the images all runs share (binary tasks)."""
    runs = runs_a + runs_b
    if any(r["y"].shape[1] != 1 for r in runs):
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
    contrast = [1 / len(runs_a)] * len(runs_a) + [-1 / len(runs_b)] * len(runs_b)
    try:
        return stats.delong_contrast(y, np.stack(scores), contrast)["p"]
    except ValueError:
        return math.nan


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
    """Paired comparisons of units on the same test images: per training size and, with several sizes, over
    all sizes ('all'), the mean over matching (n, seed) runs of AUC(a) - AUC(b), its paired-bootstrap CI
    and p-value, DeLong's p-value (per size, single-label tasks; NaN otherwise and without a loader),
    ``p`` (the configured ``method``; bootstrap where DeLong is undefined) and Holm-adjusted ``p_holm``
    within each task. ``pairs``: the (a, b, axis) to compare (default ``comparison_pairs``); a fourth
    item restricts a pair to one size (a training size, or 'all': over all sizes, the one size if there
    is only one)."""
    index = {k: i for i, k in enumerate(keys)}
    cache: dict[str, dict[str, Any]] = {}

    def scores_of(row: Mapping[str, Any]) -> dict[str, Any]:
        if row["path"] not in cache:
            cache[row["path"]] = loader(row, metric)  # type: ignore[misc]
        return cache[row["path"]]

    label_count: dict[str, int] = {}

    def single_label(task: str, row: Mapping[str, Any]) -> bool:
        """DeLong applies to single-label tasks: of a multilabel task, only one run's predictions are loaded
        here (to count its labels)."""
        if task not in label_count:
            label_count[task] = scores_of(row)["y"].shape[1]
        return label_count[task] == 1

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
            ra = [ga.loc[u] for u in units]
            rb = [gb.loc[u] for u in units]
            auc_a = float(np.mean([float(r["headline_auc"]) for r in ra]))
            auc_b = float(np.mean([float(r["headline_auc"]) for r in rb]))
            diff_reps = np.mean(
                [reps[index[x["path"]]] - reps[index[y["path"]]] for x, y in zip(ra, rb, strict=True)], axis=0
            )
            lo, hi = stats.percentile_ci(diff_reps, level)
            p_boot = stats.bootstrap_p(diff_reps)
            p_delong = math.nan
            if loader is not None and n != "all" and single_label(a["task"], ra[0]):
                p_delong = _delong_p([scores_of(r) for r in ra], [scores_of(r) for r in rb])
            use_delong = method == "delong" and not math.isnan(p_delong)
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
                    "auc_a": auc_a,
                    "auc_b": auc_b,
                    "diff": auc_a - auc_b,
                    "diff_lo": lo,
                    "diff_hi": hi,
                    "p_bootstrap": p_boot,
                    "p_delong": p_delong,
                    "p": p_delong if use_delong else p_boot,
                    "p_method": "delong" if use_delong else "bootstrap",
                }
            )
    columns = [
        "task", "axis", "n", "family_a", "arch_a", "recipe_a", "family_b", "arch_b", "recipe_b", "runs",
        "auc_a", "auc_b", "diff", "diff_lo", "diff_hi", "p_bootstrap", "p_delong", "p", "p_method", "p_holm",
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
    iterations: int,
    global_seed: int,
) -> pd.DataFrame:
    """Per stage: the winner, the runner-up, the margin on validation AUC (mean over matching (n, seed)
    runs, CI from a bootstrap over those runs) and on test AUC (paired image bootstrap CI and p-value)."""
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
            d_val = [float(ga.loc[u, "select_auc"]) - float(gb.loc[u, "select_auc"]) for u in common]
            rng = np.random.default_rng(derive_seed(global_seed, "stage", task, arch, spec["axis"], spec.get("stage")))
            row["val_margin"], row["val_margin_lo"], row["val_margin_hi"] = stats.paired_unit_ci(
                d_val, level, iterations, rng
            )
            if len(common):
                ta = [float(ga.loc[u, "headline_auc"]) for u in common]
                tb = [float(gb.loc[u, "headline_auc"]) for u in common]
                d_reps = np.mean(
                    [reps[index[ga.loc[u, "path"]]] - reps[index[gb.loc[u, "path"]]] for u in common], axis=0
                )
                row["test_winner"], row["test_runner_up"] = float(np.mean(ta)), float(np.mean(tb))
                row["test_margin"] = row["test_winner"] - row["test_runner_up"]
                row["test_margin_lo"], row["test_margin_hi"] = stats.percentile_ci(d_reps, level)
                row["test_p"] = stats.bootstrap_p(d_reps)
            row["runs"] = len(common)
        rows.append(row)
    columns = [
        "task", "arch", "stage", "axis", "candidates", "select_on", "winner", "runner_up", "winner_val",
        "runner_up_val", "val_margin", "val_margin_lo", "val_margin_hi", "test_winner", "test_runner_up",
        "test_margin", "test_margin_lo", "test_margin_hi", "test_p", "runs",
    ]  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=columns)
