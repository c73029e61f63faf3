"""rules/radiomics.smk: features once per image of a dataset -> one tuned classical model per
(task, featureset, model, n, seed) on the CNNs' training subsets -> the best model per
(task, featureset, n, seed) on validation AUC. The logic lives in smalldl/radiomics.py."""

from __future__ import annotations

import platform
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.data import cache as cache_mod
from smalldl.data import splits as splits_mod
from smalldl.errors import InputError
from smalldl.jobs._shared import selected_rows
from smalldl.record import RadiomicsFields, RunRecord, read_metrics_json
from smalldl.utils import atomic_path, derive_seed, read_table, write_json, write_parquet


def radiomics_features(
    *,
    featureset: str,
    cache_npy: str | Path,
    cache_meta: str | Path,
    split_parquets: Sequence[str | Path],
    subset_csvs: Sequence[str | Path],
    images: str,
    settings: Mapping[str, Any],
    out_parquet: str | Path,
    threads: int = 1,
) -> pd.DataFrame:
    """Features of a dataset's cached images, once per image, into ``out_parquet`` (image_id + features).

    ``images="used"``: only the images some radiomics model sees (val/test of the given splits and the
    training subsets); ``"all"`` or no splits given: every image of the cache.
    """
    from smalldl import radiomics

    arr, info = cache_mod.open_cache(cache_npy, cache_meta)
    ids = [str(i) for i in info["image_ids"]]
    if images == "used" and (split_parquets or subset_csvs):
        splits = [read_table(p) for p in split_parquets]
        subsets = [read_table(p, dtype={"image_id": str, "patient_id": str}) for p in subset_csvs]
        rows = cache_mod.rows_for(info, radiomics.used_image_ids(ids, splits, subsets))
    else:
        rows = np.arange(len(ids))
    print(f"radiomics {featureset}: {len(rows)} of {len(ids)} images ({images}), {threads} worker(s)", file=sys.stderr)
    t0 = time.time()
    table = radiomics.extract(arr, ids, featureset, settings, workers=threads, rows=rows)
    with atomic_path(out_parquet) as tmp:
        table.to_parquet(tmp, index=False)
    elapsed = time.time() - t0
    rate = len(rows) / elapsed if elapsed > 0 else float("inf")
    print(f"radiomics {featureset}: {table.shape[1] - 1} features, {rate:.1f} img/s", file=sys.stderr)
    return table


def radiomics_model(
    *,
    task_name: str,
    task: Mapping[str, Any],
    global_seed: int,
    featureset: str,
    model: str,
    n: int,
    seed: int,
    settings: Mapping[str, Any],
    features_parquet: str | Path,
    split_parquet: str | Path,
    subset_csv: str | Path,
    out_metrics: str | Path,
    out_predictions: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """Tune ``model`` on the (n, seed) training subset's features, evaluate on val and test.

    Writes metrics.json and predictions.parquet with the keys and columns of a CNN run.
    """
    import sklearn

    from smalldl import radiomics

    labels = list(task["labels"])
    split = read_table(split_parquet)
    subset = read_table(subset_csv, dtype={"image_id": str, "patient_id": str})
    if len(subset) != n:
        raise InputError(f"training subset {subset_csv} has {len(subset)} rows, expected n={n}")
    val_table, test_table = selected_rows(split, "val"), selected_rows(split, "test")
    if len(val_table) == 0:
        raise InputError(f"split {split_parquet}: empty validation set (the best radiomics model is chosen on it)")
    features = pd.read_parquet(features_parquet)
    where = f"radiomics features {features_parquet}"
    parts = {"train": subset, "val": val_table, "test": test_table}
    x = {k: radiomics.feature_matrix(features, list(t["image_id"].astype(str)), where) for k, t in parts.items()}
    y = {k: t[labels].to_numpy(dtype=np.float64) for k, t in parts.items()}
    run_seed = derive_seed(global_seed, "radiomics", task_name, featureset, model, n, seed)
    print(
        f"radiomics {task_name} {featureset} {model} n={n} seed={seed}: train {len(subset)}, val {len(val_table)}, "
        f"test {len(test_table)}, {x['train'].shape[1]} features",
        file=sys.stderr,
    )
    t0 = time.time()
    probs, infos = radiomics.fit_predict(
        x["train"], y["train"], {"val": x["val"], "test": x["test"]}, labels, model, settings, run_seed, threads
    )
    wall = time.time() - t0
    val, test = radiomics.scores(y["val"], probs["val"], labels), radiomics.scores(y["test"], probs["test"], labels)
    preds = pd.DataFrame({"image_id": list(test_table["image_id"].astype(str))})
    for j, label in enumerate(labels):
        preds[f"y_{label}"] = y["test"][:, j].astype(np.int64)
        preds[f"p_{label}"] = probs["test"][:, j]
    cv = {label: info["cv_auc"] for label, info in infos.items()}
    cv_defined = [v for v in cv.values() if v is not None]
    record = RunRecord(
        family="radiomics",
        task=task_name,
        arch=f"radiomics_{featureset}",
        recipe=model,
        n=n,
        seed=seed,
        run_seed=run_seed,
        task_type=task["type"],
        labels=labels,
        n_train=len(subset),
        n_val=len(val_table),
        n_test=len(test_table),
        train_positives=splits_mod.positive_counts(subset, labels),
        val_auc=val["auc"],
        val_loss=val["loss"],
        val_auc_per_label=val["per_label"],
        test_auc=test["auc"],
        test_loss=test["loss"],
        test_auc_per_label=test["per_label"],
        wall_time_s=wall,
        device="cpu",
        python=platform.python_version(),
        threads=int(threads),
        radiomics=RadiomicsFields(
            featureset=featureset,
            model=model,
            n_features=int(x["train"].shape[1]),
            cv_auc=float(np.mean(cv_defined)) if cv_defined else None,
            cv_auc_per_label=cv,
            cv_folds=int(settings["cv_folds"]),
            n_iter=int(settings["n_iter"]),
            best_params={label: info["best_params"] for label, info in infos.items()},
            fit_status={label: info["status"] for label, info in infos.items()},
            convergence_warnings=int(sum(info["convergence_warnings"] for info in infos.values())),
            features=str(features_parquet),
            sklearn=str(sklearn.__version__),
        ),
    )
    metrics = record.to_json()
    write_parquet(preds, out_predictions)
    write_json(out_metrics, metrics)
    print(f"test AUC {test['auc']:.4f} (val AUC {val['auc']:.4f}, cv AUC {metrics['cv_auc']})", file=sys.stderr)
    return metrics


def radiomics_best(
    *,
    model_metrics: Sequence[str | Path],
    model_predictions: Sequence[str | Path],
    out_metrics: str | Path,
    out_predictions: str | Path,
) -> dict[str, Any]:
    """Pick the radiomics model with the highest validation AUC; copy its predictions and metrics."""
    from smalldl import radiomics

    if len(model_metrics) != len(model_predictions):
        raise InputError("radiomics best: one predictions.parquet per metrics.json is needed")
    candidates: dict[str, RunRecord] = {}
    pred_of: dict[str, Path] = {}
    for m_path, p_path in zip(model_metrics, model_predictions, strict=True):
        if Path(m_path).parent != Path(p_path).parent:
            raise InputError(f"radiomics best: {m_path} and {p_path} are not from the same run")
        data = read_metrics_json(m_path)
        if data.get("family") != "radiomics" or "model" not in data:
            raise InputError(f"run metrics {m_path}: not a radiomics model run")
        record = RunRecord.from_json(data, where=f"run metrics {m_path}")
        candidates[record.radiomics.model] = record
        pred_of[record.radiomics.model] = Path(p_path)
    val_auc = {name: r.val_auc for name, r in candidates.items()}
    chosen = radiomics.select_best({name: {"val_auc": v} for name, v in val_auc.items()})
    metrics = candidates[chosen].chosen_as_best(str(pred_of[chosen].parent), val_auc).to_json()
    with atomic_path(out_predictions) as tmp:
        shutil.copyfile(pred_of[chosen], tmp)
    write_json(out_metrics, metrics)
    print(
        "radiomics best: " + ", ".join(f"{name} val AUC {v}" for name, v in val_auc.items()) + f" -> {chosen}",
        file=sys.stderr,
    )
    return metrics
