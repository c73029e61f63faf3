"""Results: the summary table (one row per run), Table 1, bootstrap CIs, paired comparisons, stage
winners, learning-curve fits and the generated results/README.md.

Inputs are the runs' files (metrics.json, predictions.parquet) and the split manifests; the schema is the
one written by the training and radiomics jobs. Optional keys (TTA, per-label AUCs, timings, radiomics
fields) may be absent or null: the code uses what is there. The headline test metric is ``test_auc_tta``
(TTA, as the paper reports) falling back to ``test_auc`` where a run has no TTA.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl import figures as figplan
from smalldl import stats
from smalldl.config import AXES as RECIPE_AXES
from smalldl.config import NO_SOURCE, Recipe
from smalldl.errors import InputError
from smalldl.utils import atomic_path, derive_seed, progress

#: Keys every run's metrics.json must have.
REQUIRED = ["task", "arch", "recipe", "n", "seed", "test_auc", "val_auc"]
#: Summary columns first in this order (when present); every other scalar key follows.
AXES = [
    "family",
    "task",
    "arch",
    "recipe",
    "schedule",
    "transfer",
    "source",
    "init",
    "featureset",
    "model",
    "n",
    "seed",
]
LEAD = [
    *AXES,
    "headline_auc",
    "headline_metric",
    "select_auc",
    "test_auc",
    "test_auc_tta",
    "val_auc",
    "val_auc_tta",
    "test_loss",
    "val_loss",
    "n_train",
    "n_val",
    "n_test",
    "selected_epoch",
    "epochs",
    "epochs_run",
    "steps",
    "max_lr",
    "lr_source",
    "wall_time_s",
    "images_per_s",
    "device",
    "run_seed",
]
UNIT = ["task", "arch", "recipe"]
SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------------------------ summary


def _flatten(m: Mapping[str, Any]) -> dict[str, Any]:
    """Scalars as they are, {label: value} dicts as ``key[label]`` columns, lists joined with ';',
    anything deeper as JSON text."""
    row: dict[str, Any] = {}
    for key, value in m.items():
        if value is None or isinstance(value, str | int | float | bool):
            row[key] = value
        elif isinstance(value, dict) and all(
            v is None or isinstance(v, str | int | float | bool) for v in value.values()
        ):
            for sub, v in value.items():
                row[f"{key}[{sub}]"] = v
        elif isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
            row[key] = ";".join(str(v) for v in value)
        else:
            row[key] = json.dumps(value, sort_keys=True)
    return row


def _read_one(path: str | Path) -> dict[str, Any]:
    try:
        m = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"run metrics {path} cannot be read ({exc})") from None
    if not isinstance(m, dict):
        raise InputError(f"run metrics {path}: not a JSON object")
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise InputError(f"run metrics {path}: missing key(s) {', '.join(missing)}")
    row = _flatten(m)
    row.setdefault("family", "cnn")
    row["path"] = str(Path(path).parent)
    return row


def _arrow_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Columns whose values mix types (a key that is a number in one run, text in another) become text,
    so that the table writes to parquet."""
    for col in table.columns:
        if table[col].dtype == object:
            kinds = {type(v) for v in table[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1 and not kinds <= {int, float}:
                table[col] = [
                    None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in table[col]
                ]
    return table


def read_metrics(
    paths: Iterable[str | Path], metric: str = "test_auc_tta", select_on: str = "val_auc_tta", workers: int = 8
) -> pd.DataFrame:
    """One row per metrics.json: the recipe axes, every scalar metric, per-label AUCs as ``key[label]``
    columns, and ``headline_auc`` (``metric``, falling back to the plain AUC when null or absent),
    ``headline_metric`` (which key supplied it) and ``select_auc`` (``select_on``, same fallback)."""
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # file reads overlap; parsing is cheap
        rows = list(pool.map(_read_one, paths, chunksize=64))
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=[*AXES, "headline_auc", "headline_metric", "select_auc", "path"])
    plain = {"test_auc_tta": "test_auc", "test_auc": "test_auc", "val_auc_tta": "val_auc", "val_auc": "val_auc"}
    for out, key, name in (("headline_auc", metric, "headline_metric"), ("select_auc", select_on, None)):
        fallback = pd.to_numeric(table[plain[key]], errors="coerce")
        primary = pd.to_numeric(table[key], errors="coerce") if key in table else pd.Series(np.nan, index=table.index)
        table[out] = primary.where(primary.notna(), fallback)
        if name:
            table[name] = np.where(primary.notna(), key, plain[key])
    for col in ("n", "seed"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("int64")
    for col in ("schedule", "transfer", "source", "init", "featureset", "model"):
        if col not in table:
            table[col] = None
    lead = [c for c in LEAD if c in table.columns]
    rest = sorted(c for c in table.columns if c not in lead and c != "path")
    table = table[[*lead, *rest, "path"]]
    table = table.sort_values(["task", "arch", "recipe", "n", "seed"], kind="mergesort").reset_index(drop=True)
    return _arrow_safe(table)


def write_summary(table: pd.DataFrame, out_parquet: str | Path, out_csv: str | Path) -> None:
    with atomic_path(out_parquet) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)


def mean_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of the headline test AUC over seeds per (task, arch, recipe, n)."""
    value = "headline_auc" if "headline_auc" in table else "test_auc"
    grouped = table.groupby(["task", "arch", "recipe", "n"], sort=True)[value]
    return grouped.agg(["mean", "std", "count"]).reset_index()


def aggregate(paths: Sequence[str | Path], out_parquet: str | Path, out_csv: str | Path, **kwargs: Any) -> pd.DataFrame:
    table = read_metrics(paths, **kwargs)
    write_summary(table, out_parquet, out_csv)
    return table


# ------------------------------------------------------------------------------------------ Table 1


def table1(manifests: Mapping[str, str | Path], config: Mapping[str, Any]) -> pd.DataFrame:
    """Images, patients, positives and masked uncertain labels per task, label and split, from the split
    manifests (``counts`` as written by smalldl.data.splits.split_counts); one row per (task, label)."""
    rows = []
    targets = set(config["study"]["targets"])
    for task, path in manifests.items():
        try:
            manifest = json.loads(Path(path).read_text())
            counts = manifest["counts"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"split manifest {path} cannot be read or has no 'counts' ({exc})") from None
        spec = config["tasks"][task]
        for label in spec["labels"]:
            row: dict[str, Any] = {
                "task": task,
                "role": "target" if task in targets else "source",
                "type": spec["type"],
                "label": label,
            }
            for split in SPLITS:
                entry = counts.get(split) or {}
                row[f"{split}_images"] = entry.get("images")
                row[f"{split}_patients"] = entry.get("patients")
                row[f"{split}_positives"] = (entry.get("positives") or {}).get(label)
                row[f"{split}_uncertain"] = (entry.get("uncertain_masked") or {}).get(label, 0)
                if "classes" in entry:
                    row[f"{split}_classes"] = entry["classes"]
            rows.append(row)
    return pd.DataFrame(rows)


def write_csv(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


# ----------------------------------------------------------------------------------- run predictions


def run_scores(row: Mapping[str, Any], metric: str = "test_auc_tta") -> dict[str, Any]:
    """A run's test predictions: image ids, labels (m x L) and the scores behind its headline AUC (the
    TTA columns ``p_tta_*`` when the headline is the TTA AUC and they are there, else ``p_*``)."""
    path = Path(row["path"]) / "predictions.parquet"
    try:
        preds = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"run predictions {path} cannot be read ({exc})") from None
    labels = [c[2:] for c in preds.columns if c.startswith("y_")]
    if not labels or "image_id" not in preds:
        raise InputError(f"run predictions {path}: needs image_id and y_<label>/p_<label> columns")
    use_tta = row.get("headline_metric") == "test_auc_tta" and metric == "test_auc_tta"
    if use_tta and not all(f"p_tta_{lab}" in preds for lab in labels):
        use_tta = False
    prefix = "p_tta_" if use_tta else "p_"
    missing = [f"{prefix}{lab}" for lab in labels if f"{prefix}{lab}" not in preds]
    if missing:
        raise InputError(f"run predictions {path}: missing column(s) {', '.join(missing)}")
    return {
        "image_id": preds["image_id"].astype(str).to_numpy(),
        "y": preds[[f"y_{lab}" for lab in labels]].to_numpy(dtype=np.int8),
        "p": preds[[f"{prefix}{lab}" for lab in labels]].to_numpy(dtype=np.float64),
        "labels": labels,
        "scores": "tta" if use_tta else "plain",
        "file": str(path),
    }


def _task_union(runs: list[dict[str, Any]], task: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted union of the test images of a task's runs and their labels; runs must agree on labels."""
    ids = np.unique(np.concatenate([r["image_id"] for r in runs]))
    y = np.full((len(ids), runs[0]["y"].shape[1]), -1, dtype=np.int8)
    for r in runs:
        if r["y"].shape[1] != y.shape[1]:
            raise InputError(
                f"run predictions {r['file']}: {r['y'].shape[1]} label columns, task {task} has {y.shape[1]}"
            )
        pos = np.searchsorted(ids, r["image_id"])
        seen = y[pos] >= 0
        if np.any(seen & (y[pos] != r["y"])):
            raise InputError(f"run predictions {r['file']}: labels disagree with other runs of task {task}")
        y[pos] = r["y"]
    return ids, y


# ---------------------------------------------------------------------------------------- bootstrap


def bootstrap(
    summary: pd.DataFrame,
    iterations: int,
    level: float,
    global_seed: int,
    metric: str = "test_auc_tta",
    loader: Callable[[Mapping[str, Any], str], dict[str, Any]] = run_scores,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Bootstrap replicates of every run's headline test AUC and its percentile CI.

    One resampling of the test images per task (stratified by the label for single-label tasks, seeded
    from the global seed and the task) is shared by all runs of the task: replicates of different runs
    are paired. Returns (one row per summary row: auc, lo, hi, se, scores, n_images; replicates
    runs x iterations, float32)."""
    reps = np.full((len(summary), iterations), np.nan, dtype=np.float32)
    rows: list[dict[str, Any]] = [{} for _ in range(len(summary))]
    for task, part in summary.groupby("task", sort=True):
        runs = [loader(row, metric) for row in progress(part.to_dict("records"), desc=f"bootstrap {task}", unit="run")]
        ids, y = _task_union(runs, task)
        rng = np.random.default_rng(derive_seed(global_seed, "bootstrap", task))
        weights = stats.bootstrap_weights(len(ids), iterations, rng, strata=y[:, 0] if y.shape[1] == 1 else None)
        for i, run in zip(part.index, runs, strict=True):
            pos = np.searchsorted(ids, run["image_id"])
            r = stats.mean_auc_replicates(run["y"], run["p"], weights.T[pos].T)  # image-major: fast gathers
            point = float(stats.mean_auc_replicates(run["y"], run["p"], np.ones((1, len(pos))))[0])
            lo, hi = stats.percentile_ci(r, level)
            reps[i] = r
            headline = summary.at[i, "headline_auc"]
            if pd.notna(headline) and not math.isnan(point) and abs(point - float(headline)) > 1e-6:
                print(f"WARNING: {run['file']}: AUC from predictions {point:.6f} != metrics {float(headline):.6f}")
            rows[i] = {
                "auc": point,
                "lo": lo,
                "hi": hi,
                "se": float(np.nanstd(r, ddof=1)) if np.sum(~np.isnan(r)) > 1 else math.nan,
                "scores": run["scores"],
                "n_images": len(pos),
            }
    keep = [c for c in [*AXES, "headline_auc", "path"] if c in summary]
    table = pd.concat([summary[keep].reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    return table, reps


def save_replicates(path: str | Path, keys: Sequence[str], reps: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, keys=np.asarray(list(keys), dtype=str), reps=reps)


def load_replicates(path: str | Path) -> tuple[list[str], np.ndarray]:
    try:
        with np.load(path) as data:
            return [str(k) for k in data["keys"]], data["reps"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"bootstrap replicates {path} cannot be read ({exc})") from None


def seed_means(summary: pd.DataFrame, run_ci: pd.DataFrame | None, level: float) -> pd.DataFrame:
    """Mean headline test AUC over seeds per (family, task, arch, recipe, n) with sd, se, a Student-t
    confidence interval over seeds and the central percentile interval of the seeds. With one seed the
    interval is that run's bootstrap CI (``band`` says which)."""
    ci = {} if run_ci is None else dict(zip(run_ci["path"], zip(run_ci["lo"], run_ci["hi"], strict=True), strict=True))
    rows = []
    keys = ["family", "task", "arch", "recipe", "n"]
    for key, part in summary.groupby(keys, sort=True, dropna=False):
        values = part["headline_auc"].astype(float).to_numpy()
        mean, lo, hi = stats.t_interval(values, level)
        band = "seeds"
        if np.sum(~np.isnan(values)) == 1 and len(part) == 1 and part["path"].iloc[0] in ci:
            lo, hi = ci[part["path"].iloc[0]]
            band = "bootstrap"
        ok = values[~np.isnan(values)]
        alpha = (1 - level) / 2
        sd = float(ok.std(ddof=1)) if ok.size > 1 else math.nan
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "mean": mean,
                "sd": sd,
                "se": sd / math.sqrt(ok.size) if ok.size > 1 else math.nan,
                "count": int(ok.size),
                "ci_lo": lo,
                "ci_hi": hi,
                "pi_lo": float(np.quantile(ok, alpha)) if ok.size else math.nan,
                "pi_hi": float(np.quantile(ok, 1 - alpha)) if ok.size else math.nan,
                "band": band,
                "select_mean": float(part["select_auc"].astype(float).mean()),
            }
        )
    return pd.DataFrame(rows)


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
) -> pd.DataFrame:
    """Paired comparisons of units on the same test images: per training size and over all sizes
    ('all'), the mean over matching (n, seed) runs of AUC(a) - AUC(b), its paired-bootstrap CI and
    p-value, DeLong's p-value (single-label tasks; None without a loader), ``p`` (the configured
    ``method``; bootstrap where DeLong is undefined) and Holm-adjusted ``p_holm`` within each task."""
    index = {k: i for i, k in enumerate(keys)}
    cache: dict[str, dict[str, Any]] = {}

    def scores_of(row: Mapping[str, Any]) -> dict[str, Any]:
        if row["path"] not in cache:
            cache[row["path"]] = loader(row, metric)  # type: ignore[misc]
        return cache[row["path"]]

    label_count: dict[str, int] = {}

    def single_label(task: str, row: Mapping[str, Any]) -> bool:
        """DeLong applies to single-label tasks; multilabel predictions are then never loaded here."""
        if task not in label_count:
            label_count[task] = scores_of(row)["y"].shape[1]
        return label_count[task] == 1

    by_unit = {k: g for k, g in summary.groupby(["task", "arch", "recipe"], sort=False)}
    rows = []
    for a, b, axis in progress(comparison_pairs(summary), desc="compare", unit="pair"):
        ga = by_unit[(a["task"], a["arch"], a["recipe"])].set_index(["n", "seed"])
        gb = by_unit[(b["task"], b["arch"], b["recipe"])].set_index(["n", "seed"])
        common = ga.index.intersection(gb.index).sort_values()
        if common.empty:
            continue
        sizes: list[Any] = sorted({n for n, _ in common})
        for n in [*sizes, "all"] if len(sizes) > 1 else sizes:
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
    summary: pd.DataFrame, stage_files: Sequence[str | Path], figures: Mapping[str, Mapping[str, Any]], select_on: str
) -> list[dict[str, Any]]:
    """The stages: every stage file, plus, for each axis figure drawn from listed recipes (no stage varies
    that axis), a 'stage' per task and architecture among that group with the winner on validation."""
    specs = [read_stage(p) for p in stage_files]
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
                winner = max(order, key=lambda r: (scores[r], -order.index(r)))
                specs.append(
                    {
                        "task": task,
                        "arch": arch,
                        "stage": None,
                        "axis": fig["axis"],
                        "candidates": order,
                        "scores": {r: float(scores[r]) for r in order},
                        "winner": winner,
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
        others = [r for r in spec["candidates"] if r != winner and not math.isnan(scores.get(r, math.nan))]
        runner = max(others, key=lambda r: scores[r]) if others else None
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


# ---------------------------------------------------------------------------------- learning curves


def learning_curves(
    summary: pd.DataFrame,
    target: float,
    model: str,
    level: float,
    iterations: int,
    global_seed: int,
) -> pd.DataFrame:
    """A fitted AUC(n) per (family, task, arch, recipe) with >= 2 training sizes, the size at which it
    reaches ``target`` with a bootstrap interval (inf: never), and whether that is an extrapolation."""
    rows = []
    for (task, family, arch, recipe), part in summary.groupby(["task", "family", "arch", "recipe"], sort=True):
        part = part[part["headline_auc"].notna()]
        n = part["n"].to_numpy(dtype=float)
        auc = part["headline_auc"].to_numpy(dtype=float)
        means = part.groupby("n")["headline_auc"].mean()
        row: dict[str, Any] = {
            "family": family,
            "task": task,
            "arch": arch,
            "recipe": recipe,
            "sizes": int(means.size),
            "runs": len(part),
            "max_n": int(means.index.max()) if means.size else None,
            "best_mean_auc": float(means.max()) if means.size else math.nan,
            "target_auc": target,
        }
        if means.size < 2:
            row["status"] = "fewer than 2 training sizes"
            rows.append(row)
            continue
        rng = np.random.default_rng(derive_seed(global_seed, "learning_curve", task, arch, recipe))
        try:
            fit = stats.learning_curve_interval(n, auc, target, model, level, iterations, rng)
        except (ValueError, RuntimeError) as exc:
            row["status"] = f"fit failed: {exc}"
            rows.append(row)
            continue
        residual = auc - stats.learning_curve(n, fit)
        row.update(fit)
        row["rmse"] = float(np.sqrt(np.mean(residual**2)))
        row["reached"] = bool(row["best_mean_auc"] >= target)
        row["extrapolated"] = bool(math.isfinite(fit["n_target"]) and fit["n_target"] > row["max_n"])
        row["status"] = "ok"
        rows.append(row)
    columns = [
        "family", "task", "arch", "recipe", "model", "a", "b", "c", "rmse", "sizes", "runs", "max_n",
        "best_mean_auc", "target_auc", "n_target", "n_target_lo", "n_target_hi", "reached", "extrapolated",
        "fits", "status",
    ]  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=columns)


# --------------------------------------------------------------------------------------- README.md


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _count(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return str(int(x))


def _size(x: Any, largest: Any = None) -> str:
    """A training size for the README; beyond 100x the largest size run it is shown as a bound."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "never"
    if largest and x > 100 * largest:
        return f"> {100 * largest:,.0f}"
    return f"{x:,.0f}"


def readme(
    summary: pd.DataFrame,
    means: pd.DataFrame,
    stages_df: pd.DataFrame,
    curves: pd.DataFrame,
    table_1: pd.DataFrame,
    comparisons: pd.DataFrame,
    figures: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
) -> str:
    """results/README.md: the stage winners, the headline numbers and what every file is."""
    level = int(round(100 * settings["ci"]))
    metric = (
        "test AUC with test-time augmentation (plain test AUC where a run has none)"
        if (settings["metric"] == "test_auc_tta")
        else "test AUC without test-time augmentation"
    )
    config_line = next(iter(figures.values()))["config"] if figures else ""
    out = [
        "# Results",
        "",
        "Generated by the workflow (rule `results_readme`); do not edit. Study: " + config_line + ".",
        f"Headline metric: {metric}; intervals are {level}% confidence intervals.",
        f"{len(summary)} runs. Build the HTML report with `snakemake --report results/report.html`.",
        "",
        "## Stage winners",
        "",
    ]
    if stages_df.empty:
        out.append("No stage or group of recipes differing in one axis in this study.")
    else:
        out += [
            "Picked on validation AUC (mean over sizes and seeds); margin = winner minus runner-up, "
            "on validation and on test (paired bootstrap over test images).",
            "",
            "| task | arch | stage | axis | winner | runner-up | val margin [CI] | test margin [CI] | p |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in stages_df.to_dict("records"):
            stage = (
                "–"
                if r["stage"] is None or (isinstance(r["stage"], float) and math.isnan(r["stage"]))
                else int(r["stage"])
            )
            out.append(
                f"| {r['task']} | {r['arch']} | {stage} | {r['axis']} | `{r['winner']}` | "
                f"{'`' + str(r['runner_up']) + '`' if isinstance(r['runner_up'], str) else '–'} | "
                f"{_fmt(r['val_margin'])} [{_fmt(r['val_margin_lo'])}, {_fmt(r['val_margin_hi'])}] | "
                f"{_fmt(r['test_margin'])} [{_fmt(r['test_margin_lo'])}, {_fmt(r['test_margin_hi'])}] | "
                f"{_fmt(r['test_p'])} |"
            )
    out += ["", "## Headline numbers", "", f"Mean test AUC over seeds [{level}% CI] per training size.", ""]
    if means.empty:
        out.append("No runs.")
    for task, part in means.groupby("task", sort=True) if not means.empty else []:
        sizes = sorted(part["n"].unique())
        out += [f"### {task}", "", "| arch | recipe | " + " | ".join(f"n={n}" for n in sizes) + " |"]
        out.append("|---|---|" + "---|" * len(sizes))
        for (arch, recipe), g in part.groupby(["arch", "recipe"], sort=True):
            cells = []
            for n in sizes:
                hit = g[g["n"] == n]
                if hit.empty:
                    cells.append("–")
                else:
                    h = hit.iloc[0]
                    cells.append(f"{_fmt(h['mean'])} [{_fmt(h['ci_lo'])}, {_fmt(h['ci_hi'])}]")
            out.append(f"| {arch} | `{recipe}` | " + " | ".join(cells) + " |")
        best = part.loc[part.groupby("n")["mean"].idxmax().dropna()]
        out += [
            "",
            "Best per size: "
            + "; ".join(
                f"n={int(b['n'])}: `{b['recipe']}` ({b['arch']}) {_fmt(b['mean'])}" for b in best.to_dict("records")
            )
            + ".",
            "",
        ]
    out += ["## How much data is needed", ""]
    ok = curves[curves["status"] == "ok"] if not curves.empty else curves
    if ok.empty:
        out.append("No learning curve could be fitted (runs at two or more training sizes are needed).")
    else:
        out += [
            f"Training images needed to reach the target test AUC {settings['target_auc']} on the fitted learning "
            f"curve (inverse power law), with a {level}% bootstrap interval ('–': none, one run per size and an "
            "exact fit); 'never': the fit levels off below it.",
            "",
            "| task | arch | recipe | model | n needed [interval] | best mean AUC | extrapolated |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in ok.to_dict("records"):
            out.append(
                f"| {r['task']} | {r['arch']} | `{r['recipe']}` | {r['model']} | {_size(r['n_target'], r['max_n'])} "
                f"[{_size(r['n_target_lo'], r['max_n'])}, {_size(r['n_target_hi'], r['max_n'])}] | "
                f"{_fmt(r['best_mean_auc'])} | "
                f"{'yes' if r['extrapolated'] else 'no'} |"
            )
    sig = (
        comparisons[(comparisons["n"].astype(str) == "all") & (comparisons["p_holm"] < 0.05)]
        if len(comparisons)
        else comparisons
    )
    out += [
        "",
        "## Comparisons",
        "",
        f"{len(comparisons)} paired comparisons in `comparisons.csv`; "
        f"{len(sig)} over all sizes with Holm-adjusted p < 0.05.",
    ]
    out += ["", "## Table 1", "", "Positives per task and split (`table1.csv`).", ""]
    if not table_1.empty:
        out += ["| task | role | label | train | val | test |", "|---|---|---|---|---|---|"]
        for r in table_1.to_dict("records"):
            cells = [_count(r.get(f"{s}_positives")) for s in SPLITS]
            out.append(f"| {r.get('task')} | {r.get('role')} | {r.get('label')} | " + " | ".join(cells) + " |")
    out += ["", "## Files", ""]
    out += [f"- `figures/{fid}.*`: {spec['title']}." for fid, spec in figures.items()]
    out += [
        "- `summary.parquet`, `summary.csv`: one row per run (recipe axes, n, seed, val/test AUC with and without "
        "TTA, per-label AUCs, timings); `headline_auc` is the headline metric.",
        "- `table1.csv`: images, patients and positives per task, label and split.",
        "- `run_ci.csv`: each run's test AUC with its bootstrap CI; `seed_means.csv`: means over seeds with CIs.",
        "- `comparisons.csv`: paired comparisons of recipes on the same test images (difference, CI, p-values).",
        "- `stages.csv`: stage winners with their margins; `learning_curves.csv`: the fits and sizes needed.",
    ]
    return "\n".join(out) + "\n"


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def is_scratch(recipe: str) -> bool:
    r = _recipe(recipe)
    return r is not None and r.source == NO_SOURCE


# ------------------------------------------------------------------------------------ rule entry points


def table1_job(manifests: Mapping[str, str | Path], config: Mapping[str, Any], out_csv: str | Path) -> pd.DataFrame:
    table = table1(manifests, config)
    write_csv(table, out_csv)
    return table


def bootstrap_job(
    summary_parquet: str | Path,
    settings: Mapping[str, Any],
    global_seed: int,
    out_run_ci: str | Path,
    out_seed_means: str | Path,
    out_replicates: str | Path,
) -> None:
    summary = pd.read_parquet(summary_parquet)
    run_ci, reps = bootstrap(summary, settings["bootstrap"], settings["ci"], global_seed, settings["metric"])
    means = seed_means(summary, run_ci, settings["ci"])
    write_csv(run_ci, out_run_ci)
    write_csv(means, out_seed_means)
    save_replicates(out_replicates, list(summary["path"]), reps)


def compare_job(
    summary_parquet: str | Path,
    replicates_npz: str | Path,
    stage_files: Sequence[str | Path],
    figures: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
    select_on: str,
    global_seed: int,
    out_comparisons: str | Path,
    out_stages: str | Path,
) -> None:
    summary = pd.read_parquet(summary_parquet)
    keys, reps = load_replicates(replicates_npz)
    missing = sorted(set(summary["path"]) - set(keys))
    if missing:
        raise InputError(f"bootstrap replicates {replicates_npz} lack run {missing[0]}; rerun rule bootstrap")
    table = compare(summary, keys, reps, settings["ci"], settings["comparison"], settings["metric"])
    specs = stage_specs(summary, stage_files, figures, select_on)
    stages_df = stage_table(summary, keys, reps, specs, settings["ci"], settings["bootstrap"], global_seed)
    write_csv(table, out_comparisons)
    write_csv(stages_df, out_stages)


def learning_curves_job(
    summary_parquet: str | Path, settings: Mapping[str, Any], global_seed: int, out_csv: str | Path
) -> pd.DataFrame:
    summary = pd.read_parquet(summary_parquet)
    lc = settings["learning_curve"]
    table = learning_curves(summary, settings["target_auc"], lc["model"], settings["ci"], lc["bootstrap"], global_seed)
    write_csv(table, out_csv)
    return table


def readme_job(
    inputs: Mapping[str, str | Path], figures: Mapping[str, Any], settings: Mapping[str, Any], out: str | Path
) -> None:
    def csv(key: str) -> pd.DataFrame:
        try:
            return pd.read_csv(inputs[key])
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    text = readme(
        pd.read_parquet(inputs["summary"]),
        csv("seed_means"),
        csv("stages"),
        csv("curves"),
        csv("table1"),
        csv("comparisons"),
        figures,
        settings,
    )
    write_text(out, text)
