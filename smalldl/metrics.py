"""Metrics of probabilities against labels, in numpy alone (no torch): ROC AUC per label and their mean,
the masked binary cross-entropy, and accuracy and macro AUC for multiclass. A negative label (-1,
uncertain) is left out of the loss and the AUC, as in the training loss.

The AUC is the Mann-Whitney statistic with average ranks for ties, which is exactly scikit-learn's
``roc_auc_score`` for binary labels (a test checks it) without importing scikit-learn, which costs
every training job a second or more of start-up.
"""

from __future__ import annotations

import math

import numpy as np


def roc_auc_score(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of binary ``y_true`` (0/1 or bool) against ``score``; ties count one half."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC is undefined with one class only")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks (1-based) over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_per_label(y_true: np.ndarray, prob: np.ndarray, labels: list[str]) -> dict[str, float]:
    """AUC for each label column over the images where that label is known (a negative value, -1 =
    uncertain, masks it); NaN where a label has only one class among them."""
    y_true = np.asarray(y_true).reshape(len(y_true), -1)
    prob = np.asarray(prob).reshape(len(prob), -1)
    out: dict[str, float] = {}
    for j, name in enumerate(labels):
        known = y_true[:, j] >= 0
        col, score = y_true[known, j], prob[known, j]
        out[name] = float(roc_auc_score(col, score)) if 0 < col.sum() < len(col) else math.nan
    return out


def masked_bce(y_true: np.ndarray, prob: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities over the known labels (negative = masked);
    NaN when none is known."""
    y = np.asarray(y_true, dtype=np.float64).reshape(len(prob), -1)
    known = y >= 0
    if not known.any():
        return math.nan
    p = np.clip(np.asarray(prob, dtype=np.float64).reshape(y.shape), eps, 1 - eps)
    terms = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(terms.mean() if known.all() else terms[known].mean())


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
