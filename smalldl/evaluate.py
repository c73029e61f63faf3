"""Metrics: ROC AUC per label and their mean (scikit-learn), for binary, multilabel and multiclass."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def auc_per_label(y_true: np.ndarray, prob: np.ndarray, labels: list[str]) -> dict[str, float]:
    """AUC for each label column; NaN where a label has only one class in ``y_true``."""
    y_true = np.asarray(y_true).reshape(len(y_true), -1)
    prob = np.asarray(prob).reshape(len(prob), -1)
    out: dict[str, float] = {}
    for j, name in enumerate(labels):
        col = y_true[:, j]
        out[name] = float(roc_auc_score(col, prob[:, j])) if 0 < col.sum() < len(col) else math.nan
    return out


def mean_auc(per_label: dict[str, float]) -> float:
    """Mean over the labels whose AUC is defined (the paper's multilabel metric)."""
    values = [v for v in per_label.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def multiclass_scores(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Accuracy and macro one-vs-rest AUC over the classes present."""
    y_true = np.asarray(y_true).astype(int)
    acc = float((prob.argmax(1) == y_true).mean())
    present = np.unique(y_true)
    if len(present) < 2:
        return {"accuracy": acc, "auc": math.nan}
    aucs = [roc_auc_score(y_true == c, prob[:, c]) for c in present]
    return {"accuracy": acc, "auc": float(np.mean(aucs))}
