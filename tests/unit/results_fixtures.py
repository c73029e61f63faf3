"""Run folders written the way the training and radiomics jobs write them (metrics.json, predictions.parquet,
history.csv), with predictions drawn so that AUC grows with n and differs by recipe; the metrics' AUCs are
computed from the predictions, as the jobs do."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from smalldl.config import Recipe

TASKS = {"emph": ("binary", ["Emphysema"]), "multi": ("multilabel", ["A", "B", "C"])}
QUALITY = {"none": 0.3, "cxr13": 1.2, "mura": 0.7, "imagenet": 0.9}


def _labels(task: str, m: int, split: str = "test") -> pd.DataFrame:
    key = task if split == "test" else f"{task}/{split}"  # the test labels as they always were
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    _, labels = TASKS[task]
    ids = [f"{task}_{i:04d}" if split == "test" else f"{task}_{split}_{i:04d}" for i in range(m)]
    y = rng.random((m, len(labels))) < 0.4
    y[: m // 2, 0] = True  # balanced first label
    y[m // 2 :, 0] = False
    return pd.DataFrame({"image_id": ids, **{f"y_{lab}": y[:, j].astype(int) for j, lab in enumerate(labels)}})


def quality(recipe: str, n: int) -> float:
    r = Recipe.parse(recipe)
    q = QUALITY.get(r.source, 0.8)
    q *= {"onecycle": 1.0, "regular": 0.9}[r.schedule] * {"finetune": 1.0, "gradual": 1.0, "extractor": 0.7}[r.transfer]
    q *= {"default": 1.0, "transfer": 1.0, "moments": 0.4, "momentsconv": 0.5}[r.init]
    return q * math.log(n) / 6


def _auc(y: np.ndarray, p: np.ndarray) -> tuple[float, dict]:
    per = {}
    for j in range(y.shape[1]):
        per[j] = float(roc_auc_score(y[:, j], p[:, j])) if 0 < y[:, j].sum() < len(y) else math.nan
    vals = [v for v in per.values() if not math.isnan(v)]
    return (float(np.mean(vals)) if vals else math.nan), per


def write_run(
    root: Path,
    task: str,
    arch: str,
    recipe: str,
    n: int,
    seed: int,
    m: int = 80,
    tta: bool = True,
    family: str = "cnn",
    q: float | None = None,
    history: bool = True,
    m_val: int = 60,
    val_shift: float = 0.0,
) -> Path:
    """A run folder; its validation predictions (val_predictions.parquet, CNN runs) are drawn like the test
    ones with quality q + ``val_shift``, and val_auc(_tta) are computed from them."""
    kind, labels = TASKS[task]
    rng = np.random.default_rng(zlib.crc32(f"{task}/{arch}/{recipe}/{n}/{seed}".encode()))
    q = quality(recipe, n) if q is None else q

    def draw(split: str, size: int, quality: float) -> tuple[pd.DataFrame, tuple, tuple]:
        truth = _labels(task, size, split)
        y = truth[[f"y_{lab}" for lab in labels]].to_numpy()
        p = 1 / (1 + np.exp(-(quality * (2 * y - 1) + rng.normal(0, 1, y.shape))))
        p_tta = 1 / (1 + np.exp(-(quality * 1.1 * (2 * y - 1) + rng.normal(0, 1, y.shape))))
        preds = truth.copy()
        for j, lab in enumerate(labels):
            preds[f"p_{lab}"] = p[:, j]
            if tta:
                preds[f"p_tta_{lab}"] = p_tta[:, j]
        return preds, _auc(y, p), _auc(y, p_tta)

    preds, (auc, per), (auc_tta, per_tta) = draw("test", m, q)
    val_preds, (val_auc, val_per), (val_auc_tta, _) = draw("val", m_val, q + val_shift)
    run = root / "results" / "runs" / task / arch / recipe / f"n{n}" / f"s{seed}"
    run.mkdir(parents=True, exist_ok=True)
    preds.to_parquet(run / "predictions.parquet", index=False)
    if family == "cnn":
        val_preds.to_parquet(run / "val_predictions.parquet", index=False)
    if family == "cnn":
        r = Recipe.parse(recipe)
        axes = {"schedule": r.schedule, "transfer": r.transfer, "source": r.source, "init": r.init}
    else:
        axes = {"schedule": None, "transfer": None, "source": None, "init": None, "featureset": arch.split("_", 1)[1],
                "model": recipe}  # fmt: skip
    metrics = {
        "family": family,
        "task": task,
        "arch": arch,
        "recipe": recipe,
        **axes,
        "n": n,
        "seed": seed,
        "run_seed": 1000 + seed,
        "task_type": kind,
        "labels": labels,
        "n_train": n,
        "n_val": 40,
        "n_test": m,
        "train_positives": {lab: n // 2 for lab in labels},
        "val_auc": val_auc,
        "val_loss": 0.5,
        "val_auc_per_label": {lab: val_per[j] for j, lab in enumerate(labels)},
        "test_auc": auc,
        "test_loss": 0.6,
        "test_auc_per_label": {lab: per[j] for j, lab in enumerate(labels)},
        "wall_time_s": 1.5,
        "images_per_s": 100.0,
        "device": "cpu",
    }
    if tta:
        metrics.update(
            {
                "val_auc_tta": val_auc_tta,
                "test_auc_tta": auc_tta,
                "test_auc_per_label_tta": {lab: per_tta[j] for j, lab in enumerate(labels)},
            }
        )
    (run / "metrics.json").write_text(json.dumps(metrics, allow_nan=True).replace("NaN", "null"))
    if history and family == "cnn":
        write_history(run / "history.csv", Recipe.parse(recipe))
    return run / "metrics.json"


def write_history(path: Path, recipe: Recipe, steps: int = 40, epochs: int = 4) -> None:
    rows = []
    cut = math.ceil(0.3 * steps)
    for i in range(steps):
        if recipe.schedule == "onecycle":
            if i < cut:
                lr = 1e-3 + (1e-3 / 25 - 1e-3) / 2 * (1 + math.cos(i * math.pi / cut))
                mom = 0.85 + (0.95 - 0.85) / 2 * (1 + math.cos(i * math.pi / cut))
            else:
                j = i - cut
                lr = 1e-3 / 25000 + (1e-3 - 1e-3 / 25000) / 2 * (1 + math.cos(j * math.pi / (steps - cut)))
                mom = 0.95 + (0.85 - 0.95) / 2 * (1 + math.cos(j * math.pi / (steps - cut)))
        else:
            lr, mom = 1e-3 / (10 ** (i // 20)), 0.9
        trainable = "3" if i < 0.1 * steps else ("2,3" if i < 0.2 * steps else "1,2,3")
        row = {"kind": "step", "epoch": i // (steps // epochs) + 1, "step": i + 1, "lr": lr, "momentum": mom,
               "train_loss": 1.0 / (i + 1)}  # fmt: skip
        if recipe.transfer == "gradual":
            row.update({"lr_group1": lr / 9, "lr_group2": lr / 3, "lr_group3": lr, "trainable": trainable})
        rows.append(row)
    for e in range(epochs):
        rows.append({"kind": "epoch", "epoch": e + 1, "step": (e + 1) * steps // epochs, "train_loss": 0.5,
                     "val_loss": 0.6, "val_auc": 0.7})  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)


def make_study(root: Path, recipes, sizes=(20, 40, 80), seeds=(0, 1), tasks=("emph", "multi"), arch="resnet18", **kw):
    return [write_run(root, t, arch, r, n, s, **kw) for t in tasks for r in recipes for n in sizes for s in seeds]
