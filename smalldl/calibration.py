"""Calibration and operating points of one fixed model (the final model of a target), in numpy alone.

- Calibration: the reliability diagram's bins (``reliability``), the Brier score, the expected calibration
  error (``ece``: equal-width bins, weighted by their counts), and a temperature fitted on validation
  (``fit_temperature``) applied to the model's output probabilities (``apply_temperature``: the logit of a
  binary/multilabel probability, the log of a multiclass one, divided by T). Scaling the logit of each
  label's probability by one T keeps the order of the probabilities of a label, so its AUC is unchanged.
- Operating points: thresholds chosen on validation (``thresholds``: the highest threshold that keeps
  sensitivity at 0.90 / 0.95, and Youden's J), read on test (``confusion``) with sensitivity, specificity,
  PPV and NPV at the test prevalence, each with a percentile interval over resampled test patients
  (``smalldl.stats.bootstrap_weights`` by patient, stratified: the model is fixed, so the test patients are
  the only source of noise left).

A prediction is positive when its probability is at least the threshold. Uncertain labels (-1) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from smalldl import stats

#: The sensitivities at which a threshold is chosen on validation, then Youden's J.
SENSITIVITIES = (0.90, 0.95)
EPS = 1e-7


def _clean(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype=np.float64).ravel(), np.asarray(p, dtype=np.float64).ravel()
    keep = (y == 0) | (y == 1)
    return y[keep], p[keep]


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference of probability and outcome (binary; uncertain labels left out)."""
    y, p = _clean(y, p)
    return float(np.mean((p - y) ** 2)) if len(y) else math.nan


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """The reliability diagram: per equal-width bin of [0, 1] (the last one closed) its bounds, count,
    mean probability and observed fraction of positives (NaN where empty)."""
    y, p = _clean(y, p)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        k = int(sel.sum())
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": k,
                "mean_p": float(p[sel].mean()) if k else math.nan,
                "observed": float(y[sel].mean()) if k else math.nan,
            }
        )
    return out


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (count / N) |observed - mean probability|."""
    rows = [r for r in reliability(y, p, bins) if r["count"]]
    total = sum(r["count"] for r in rows)
    if not total:
        return math.nan
    return float(sum(r["count"] / total * abs(r["observed"] - r["mean_p"]) for r in rows))


def _logits(p: np.ndarray, task_type: str) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) if task_type == "multiclass" else np.log(p) - np.log1p(-p)


def apply_temperature(p: np.ndarray, temperature: float, task_type: str) -> np.ndarray:
    """Probabilities with their logits (log-probabilities for multiclass) divided by ``temperature``
    (T = 1: ``p`` itself, unchanged to the bit)."""
    p = np.asarray(p)
    if temperature == 1.0:
        return p
    z = _logits(p, task_type) / temperature
    if task_type == "multiclass":
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(p.dtype)
    return (1.0 / (1.0 + np.exp(-z))).astype(p.dtype)


def nll(y: np.ndarray, p: np.ndarray, task_type: str) -> float:
    """Mean negative log-likelihood (binary/multilabel: per label entry, uncertain ones left out;
    multiclass: ``y`` the class index)."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    if task_type == "multiclass":
        y = np.asarray(y).astype(int).ravel()
        return float(-np.log(p[np.arange(len(y)), y]).mean())
    y = np.asarray(y, dtype=np.float64).reshape(p.shape)
    keep = (y == 0) | (y == 1)
    ll = y * np.log(p) + (1 - y) * np.log1p(-p)
    return float(-ll[keep].mean())


def fit_temperature(y: np.ndarray, p: np.ndarray, task_type: str) -> float:
    """The temperature T in [0.05, 20] minimising the NLL of ``apply_temperature(p, T)`` (one T for all
    labels; a bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda log_t: nll(y, apply_temperature(p, float(np.exp(log_t)), task_type), task_type),
        bounds=(math.log(0.05), math.log(20.0)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(res.x))


def choose_temperature(y: np.ndarray, p: np.ndarray, task_type: str, min_gain: float = 0.01) -> dict[str, Any]:
    """The temperature fitted on validation, kept where it lowers the validation NLL by at least
    ``min_gain`` (relative), else 1 (no scaling): {temperature, fitted, nll_before, nll_after, used}."""
    fitted = fit_temperature(y, p, task_type)
    before = nll(y, p, task_type)
    after = nll(y, apply_temperature(p, fitted, task_type), task_type)
    used = bool(before > 0 and (before - after) / before >= min_gain)
    return {
        "temperature": fitted if used else 1.0,
        "fitted": fitted,
        "nll_before": before,
        "nll_after": after,
        "used": used,
    }


# -------------------------------------------------------------------------------------------- operating points


def confusion(y: np.ndarray, p: np.ndarray, threshold: float, weights: np.ndarray | None = None) -> dict[str, Any]:
    """TP, FP, TN, FN of ``p >= threshold`` and sensitivity, specificity, PPV, NPV (NaN where undefined);
    ``weights`` (B x m bootstrap counts): arrays of B replicates instead."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    pos, pred = (y == 1).astype(np.float64), (p >= threshold).astype(np.float64)
    neg = (y == 0).astype(np.float64)
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(weights)
    tp, fp = w @ (pos * pred), w @ (neg * pred)
    fn, tn = w @ (pos * (1 - pred)), w @ (neg * (1 - pred))

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)

    out = {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
    }
    if weights is None:
        return {k: (int(v[0]) if k in ("tp", "fp", "tn", "fn") else float(v[0])) for k, v in out.items()}
    return out


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (``p >= t`` among the positives) is at least ``target``."""
    y, p = _clean(y, p)
    scores = np.sort(p[y == 1])[::-1]
    if not len(scores):
        return math.nan
    k = max(1, math.ceil(target * len(scores) - 1e-9))  # positives that must be called positive
    return float(scores[k - 1])


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold (one of the probabilities) maximising sensitivity + specificity - 1 (ties: the
    highest threshold)."""
    y, p = _clean(y, p)
    if not (y == 1).any() or not (y == 0).any():
        return math.nan
    best, best_t = -math.inf, math.nan
    for t in np.unique(p)[::-1]:
        c = confusion(y, p, float(t))
        j = c["sensitivity"] + c["specificity"] - 1
        if j > best + 1e-12:
            best, best_t = j, float(t)
    return best_t


def thresholds(
    y_val: np.ndarray, p_val: np.ndarray, sensitivities: Sequence[float] = SENSITIVITIES
) -> dict[str, float]:
    """The operating points' thresholds, chosen on validation: ``sens0.90``, ``sens0.95``, ``youden``."""
    out = {f"sens{s:.2f}": threshold_for_sensitivity(y_val, p_val, s) for s in sensitivities}
    out["youden"] = youden_threshold(y_val, p_val)
    return out


def operating_points(
    y_val: np.ndarray,
    p_val: np.ndarray,
    y_test: np.ndarray,
    p_test: np.ndarray,
    patients: np.ndarray,
    *,
    level: float = 0.95,
    iterations: int = 2000,
    seed: int = 0,
    sensitivities: Sequence[float] = SENSITIVITIES,
) -> list[dict[str, Any]]:
    """One row per operating point (thresholds chosen on validation, ``thresholds``), read on test: the
    counts, the test prevalence and each rate with its percentile interval over ``iterations`` resamplings
    of the test patients (stratified by whether a patient has a positive image)."""
    y_test, p_test = np.asarray(y_test, dtype=np.float64), np.asarray(p_test, dtype=np.float64)
    keep = (y_test == 0) | (y_test == 1)
    y_test, p_test, patients = y_test[keep], p_test[keep], np.asarray(patients)[keep]
    weights = stats.bootstrap_weights(
        len(y_test), iterations, np.random.default_rng(seed), strata=y_test, groups=patients
    )
    rows = []
    for name, t in thresholds(y_val, p_val, sensitivities).items():
        row: dict[str, Any] = {
            "point": name,
            "threshold": t,
            "prevalence": float(y_test.mean()) if len(y_test) else math.nan,
        }
        if math.isnan(t):
            rows.append(row)
            continue
        row.update(confusion(y_test, p_test, t))
        reps = confusion(y_test, p_test, t, weights)
        for k in ("sensitivity", "specificity", "ppv", "npv"):
            row[f"{k}_lo"], row[f"{k}_hi"] = stats.percentile_ci(reps[k], level)
        rows.append(row)
    return rows


def summary(y: np.ndarray, p: np.ndarray, bins: int = 10) -> Mapping[str, float]:
    """Brier score and ECE of one label's probabilities."""
    return {"brier": brier(y, p), "ece": ece(y, p, bins)}
