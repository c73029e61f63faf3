"""Each run's test AUC with a bootstrap confidence interval over its test patients, from its predictions;
the replicates (paired across the runs of a task, for the comparisons; of the validation predictions too,
for the answer's selection); and the means over seeds with intervals over training runs and test
patients (``stats.mean_interval``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl import stats
from smalldl.errors import InputError
from smalldl.record import RUN_KEYS
from smalldl.tta import plain_metric, tta_else_plain
from smalldl.utils import derive_seed, progress, read_table

# ----------------------------------------------------------------------------------- run predictions


def run_scores(row: Mapping[str, Any], metric: str = "test_auc_tta") -> dict[str, Any]:
    """A run's test predictions: image ids, labels (m x L) and the scores behind its headline AUC (the
    TTA columns ``p_tta_*`` when the headline is the TTA AUC and they are there, else ``p_*``)."""
    return read_scores(
        Path(row["path"]) / "predictions.parquet",
        lambda cols, labels: row.get("headline_metric") == metric and all(f"p_tta_{lab}" in cols for lab in labels),
        metric,
    )


def val_scores(row: Mapping[str, Any], metric: str = "val_auc_tta") -> dict[str, Any]:
    """A CNN run's validation predictions (val_predictions.parquet): the scores behind its selection
    metric (``metric``: val_auc_tta where the run has TTA columns, else the plain ones; val_auc)."""
    path = Path(row["path"]) / "val_predictions.parquet"
    if not path.exists():
        raise InputError(f"run {row['path']} has no val_predictions.parquet; rerun its finetune job")
    return read_scores(path, lambda cols, labels: all(f"p_tta_{lab}" in cols for lab in labels), metric)


def read_scores(path: Path, has_tta: Callable[[Any, list[str]], bool], metric: str) -> dict[str, Any]:
    """Image ids, labels and scores of a predictions file; the TTA scores where ``metric`` asks for them
    and ``has_tta(columns, labels)`` (``tta.tta_else_plain``)."""
    preds = read_table(path)
    labels = [c[2:] for c in preds.columns if c.startswith("y_")]
    if not labels or "image_id" not in preds:
        raise InputError(f"run predictions {path}: needs image_id and y_<label>/p_<label> columns")
    used = tta_else_plain(metric, lambda k: has_tta(preds.columns, labels))
    use_tta = used != plain_metric(used)
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


def read_patients(split_parquets: Sequence[str | Path]) -> dict[str, str]:
    """image_id -> patient_id from the targets' split tables (the bootstrap resamples patients)."""
    out: dict[str, str] = {}
    for path in split_parquets:
        try:
            table = read_table(path, columns=["image_id", "patient_id"])
        except (OSError, KeyError) as exc:  # a damaged table is read_table's one line already
            raise InputError(f"split table {path} cannot be read for its patient ids ({exc})") from None
        out.update(zip(table["image_id"].astype(str), table["patient_id"].astype(str), strict=True))
    return out


def _replicates(
    summary: pd.DataFrame,
    iterations: int,
    global_seed: int,
    metric: str,
    loader: Callable[[Mapping[str, Any], str], dict[str, Any]],
    patients: Mapping[str, str] | None,
    key: str,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The runs' AUC replicates under one resampling of the images per task (``key``: which split, in
    the seed), shared by the task's runs: by patient where ``patients`` knows the images (an image it
    does not know is its own patient), stratified by the label for single-label tasks."""
    reps = np.full((len(summary), iterations), np.nan, dtype=np.float32)
    rows: list[dict[str, Any]] = [{} for _ in range(len(summary))]
    for task, part in summary.groupby("task", sort=True):
        runs = [loader(row, metric) for row in progress(part.to_dict("records"), desc=f"bootstrap {task}", unit="run")]
        ids, y = _task_union(runs, task)
        groups = None if patients is None else np.array([patients.get(i, f"image:{i}") for i in ids])
        rng = np.random.default_rng(derive_seed(global_seed, key, task))
        weights = stats.bootstrap_weights(
            len(ids), iterations, rng, strata=y[:, 0] if y.shape[1] == 1 else None, groups=groups
        )
        for i, run in zip(part.index, runs, strict=True):
            pos = np.searchsorted(ids, run["image_id"])
            reps[i] = stats.mean_auc_replicates(run["y"], run["p"], weights.T[pos].T)  # image-major: fast gathers
            point = float(stats.mean_auc_replicates(run["y"], run["p"], np.ones((1, len(pos))))[0])
            rows[i] = {
                "point": point,
                "scores": run["scores"],
                "n_images": len(pos),
                "n_patients": len(set(groups[pos])) if groups is not None else len(pos),
                "file": run["file"],
            }
    return reps, rows


def bootstrap(
    summary: pd.DataFrame,
    iterations: int,
    level: float,
    global_seed: int,
    metric: str = "test_auc_tta",
    loader: Callable[[Mapping[str, Any], str], dict[str, Any]] = run_scores,
    patients: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Bootstrap replicates of every run's headline test AUC and its percentile CI (one run: the test
    patients vary, the trained model is fixed).

    One resampling of the test patients per task (``patients``: image_id -> patient_id; without it, of
    the images; stratified by the label for single-label tasks, seeded from the global seed and the task)
    is shared by all runs of the task: replicates of different runs are paired. Returns (one row per
    summary row: its run keys, headline_auc and path, then auc, lo, hi, se, scores, n_images, n_patients;
    replicates runs x iterations, float32)."""
    reps, found = _replicates(summary, iterations, global_seed, metric, loader, patients, "bootstrap")
    rows = []
    for i, r in enumerate(found):
        headline = summary.iloc[i]["headline_auc"] if len(summary) else math.nan
        point = r["point"]
        if pd.notna(headline) and not math.isnan(point) and abs(point - float(headline)) > 1e-6:
            print(f"WARNING: {r['file']}: AUC from predictions {point:.6f} != metrics {float(headline):.6f}")
        lo, hi = stats.percentile_ci(reps[i], level)
        ok = np.sum(~np.isnan(reps[i]))
        rows.append(
            {
                "auc": point,
                "lo": lo,
                "hi": hi,
                "se": float(np.nanstd(reps[i], ddof=1)) if ok > 1 else math.nan,
                "scores": r["scores"],
                "n_images": r["n_images"],
                "n_patients": r["n_patients"],
            }
        )
    keep = [c for c in [*RUN_KEYS, "headline_auc", "path"] if c in summary]
    table = pd.concat([summary[keep].reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    return table, reps


def val_bootstrap(
    summary: pd.DataFrame,
    iterations: int,
    global_seed: int,
    select_on: str = "val_auc_tta",
    loader: Callable[[Mapping[str, Any], str], dict[str, Any]] = val_scores,
    patients: Mapping[str, str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Paired bootstrap replicates of every CNN run's validation AUC (``select_on``), resampling the
    validation patients once per task: the runs' paths and the replicates (runs x iterations)."""
    cnn = summary[summary["family"] == "cnn"].reset_index(drop=True)
    if cnn.empty:
        return [], np.zeros((0, iterations), dtype=np.float32)
    reps, _ = _replicates(cnn, iterations, global_seed, select_on, loader, patients, "bootstrap-val")
    return list(cnn["path"]), reps


def seed_means(summary: pd.DataFrame, keys: Sequence[str], reps: np.ndarray, level: float) -> pd.DataFrame:
    """Mean headline test AUC over seeds per (family, task, arch, recipe, n) with sd, se, the central
    percentile interval of the seeds and a confidence interval of the mean (``ci_lo``, ``ci_hi``) that
    includes the variation between training runs and of the test patients (``stats.mean_interval``: t over
    the seeds plus the test images' shared variance; ``band`` ``seeds+test``); with fewer than
    ``stats.MIN_RUNS`` seeds, of the test patients only (``band`` ``test``). Every bound lies in [0, 1]."""
    index = {k: i for i, k in enumerate(keys)}
    missing = sorted(set(summary["path"]) - set(index))
    if missing:
        raise InputError(f"bootstrap replicates lack run {missing[0]}; rerun rule bootstrap")
    rows = []
    group_keys = ["family", "task", "arch", "recipe", "n"]
    for key, part in summary.groupby(group_keys, sort=True, dropna=False):
        values = part["headline_auc"].astype(float).to_numpy()
        ok = values[~np.isnan(values)]
        lo, hi, band = stats.mean_interval(reps[[index[p] for p in part["path"]]], level, values)
        alpha = (1 - level) / 2
        sd = float(ok.std(ddof=1)) if ok.size > 1 else math.nan
        rows.append(
            {
                **dict(zip(group_keys, key, strict=True)),
                "mean": float(ok.mean()) if ok.size else math.nan,
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
