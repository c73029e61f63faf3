"""Statistics for the results: bootstrap AUCs, DeLong's test, confidence intervals, learning-curve fits.

Pure numpy/scipy on arrays; no files. The results module feeds it the runs' predictions.

Bootstrap design: every run of a task is scored on the same test images, so one matrix of resampling
weights per task (``bootstrap_weights``) is applied to every run of that task. Replicate b of two runs then
refers to the same resampled test set, which makes differences of replicates a *paired* bootstrap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as sps

# ---------------------------------------------------------------------------------------------- AUC


def bootstrap_weights(
    n_images: int, iterations: int, rng: np.random.Generator, strata: np.ndarray | None = None
) -> np.ndarray:
    """Resampling counts (iterations x n_images): how often each image is drawn in each replicate.

    With ``strata`` (e.g. the binary label) each stratum is resampled within itself, so every replicate
    keeps the original number of positives and negatives (pROC's stratified bootstrap). Stored image-major
    (Fortran order) so that selecting and sorting images is a fast row gather."""
    weights = np.zeros((n_images, iterations), dtype=np.float32)
    groups = [np.arange(n_images)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for idx in groups:
        k = len(idx)
        if k == 0:
            continue
        draws = rng.integers(0, k, size=(iterations, k)) + (np.arange(iterations) * k)[:, None]
        weights[idx, :] = np.bincount(draws.ravel(), minlength=iterations * k).reshape(iterations, k).T
    return weights.T


def weighted_auc(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` against binary ``y`` under each row of ``weights`` (B x m); ties count 1/2.

    A row of ones gives the ordinary (Mann-Whitney) AUC. NaN where a row has no positive or no negative
    weight. O(B m) after one sort of the scores."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    order = np.argsort(scores, kind="mergesort")
    s, yy = scores[order], y[order]
    w = np.atleast_2d(np.asarray(weights)).T[order]  # image-major (m x B), sorted by score
    neg = np.where(yy[:, None], np.float32(0), w)
    # cum[k] = negative weight of the first k sorted images, per replicate
    cum = np.zeros((w.shape[0] + 1, w.shape[1]))
    np.cumsum(neg, axis=0, dtype=np.float64, out=cum[1:])
    pos_idx = np.flatnonzero(yy)
    wp = w[pos_idx].astype(np.float64)
    new_group = np.r_[True, s[1:] != s[:-1]]
    if new_group.all():  # no ties: the negatives below a positive are those sorted before it
        num = np.einsum("ij,ij->j", wp, cum[pos_idx])
    else:
        group = np.cumsum(new_group) - 1
        starts = np.flatnonzero(new_group)
        ends = np.r_[starts[1:], len(s)]
        lo, hi = starts[group[pos_idx]], ends[group[pos_idx]]
        num = np.einsum("ij,ij->j", wp, 0.5 * (cum[lo] + cum[hi]))
    den = wp.sum(axis=0) * cum[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def mean_auc_replicates(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over labels of the per-label weighted AUC (labels undefined in a replicate are skipped),
    the multilabel metric of the paper; one value per row of ``weights``. A negative label (-1,
    uncertain) is masked: that image has no weight in that label's AUC."""
    y = np.asarray(y).reshape(len(y), -1)
    p = np.asarray(p, dtype=np.float64).reshape(len(p), -1)
    weights = np.atleast_2d(weights)

    def label_auc(j: int) -> np.ndarray:
        known = y[:, j] >= 0
        if known.all():
            return weighted_auc(p[:, j], y[:, j], weights)
        return weighted_auc(p[known, j], y[known, j], weights[:, known])

    per_label = np.stack([label_auc(j) for j in range(y.shape[1])], axis=1)
    defined = ~np.isnan(per_label)
    total = np.where(defined, per_label, 0.0).sum(axis=1)
    count = defined.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def auc_bootstrap_se(
    y: np.ndarray, p: np.ndarray, iterations: int, rng: np.random.Generator, multiclass: bool = False
) -> float:
    """Bootstrap standard error of the mean AUC over labels (``mean_auc_replicates``) of scores ``p`` (m x L)
    against ``y`` (m x L, -1 masked; stratified by the label when there is one), resampling the images.
    ``multiclass``: ``y`` holds class indices and ``p`` one column per class (the macro one-vs-rest AUC
    over the classes present). NaN when fewer than two replicates are defined."""
    p = np.asarray(p, dtype=np.float64).reshape(len(p), -1)
    if multiclass:
        y = (np.asarray(y).astype(int).reshape(-1, 1) == np.arange(p.shape[1])).astype(np.int8)
    y = np.asarray(y).reshape(len(p), -1)
    weights = bootstrap_weights(len(p), iterations, rng, strata=y[:, 0] if y.shape[1] == 1 else None)
    reps = mean_auc_replicates(y, p, weights)
    reps = reps[~np.isnan(reps)]
    return float(reps.std(ddof=1)) if reps.size > 1 else math.nan


def percentile_ci(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored; NaN if none is left)."""
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value for 'the difference is 0': twice the smaller tail share of replicates
    on either side of 0, with the +1 correction so that it is never exactly 0."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return math.nan
    if np.all(d == 0):
        return 1.0
    below = (np.sum(d <= 0) + 1) / (d.size + 1)
    above = (np.sum(d >= 0) + 1) / (d.size + 1)
    return float(min(1.0, 2.0 * min(below, above)))


# ------------------------------------------------------------------------------------------- DeLong


def delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their covariance matrix for K score vectors on the same images (DeLong et al. 1988, in the
    fast midrank form of Sun & Xu 2014). ``scores`` is K x m, ``y`` binary of length m."""
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError("DeLong needs at least two positives and two negatives")
    tx = sps.rankdata(pos, axis=1)
    ty = sps.rankdata(neg, axis=1)
    tz = sps.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n  # structural components of the positives
    v10 = 1.0 - (tz[:, m:] - ty) / m  # ... and of the negatives
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def delong_contrast(y: np.ndarray, scores: np.ndarray, contrast: Sequence[float]) -> dict[str, float]:
    """DeLong test of ``contrast . AUCs = 0`` (e.g. [1/2, 1/2, -1/2, -1/2]: the mean of two seeds of
    recipe A minus that of recipe B, all on the same images). Returns diff, se, z and the two-sided p."""
    aucs, cov = delong(y, scores)
    c = np.asarray(contrast, dtype=np.float64)
    diff = float(c @ aucs)
    var = float(c @ cov @ c)
    if var <= 0:
        return {"diff": diff, "se": 0.0, "z": math.nan, "p": 1.0 if diff == 0 else 0.0}
    z = diff / math.sqrt(var)
    return {"diff": diff, "se": math.sqrt(var), "z": z, "p": float(2.0 * sps.norm.sf(abs(z)))}


# ------------------------------------------------------------------------------- intervals, p-values


#: Fewest seeds behind an interval that also covers the variation between seeds (``mean_interval``).
MIN_SEEDS = 3


def mean_interval(
    replicates: np.ndarray, level: float, rng: np.random.Generator, min_seeds: int = MIN_SEEDS
) -> tuple[float, float, str]:
    """Interval of the mean AUC over seeds from the runs' bootstrap replicates (seeds x B, the replicates
    of one task paired: column b of every run is the same resampling of the test images).

    With ``min_seeds`` or more seeds, a hierarchical bootstrap: replicate b draws the seeds with
    replacement, then takes each drawn seed's AUC on test resampling b, and averages them; the interval
    covers both sources of variation, the seeds and the test images. With fewer seeds the seeds are too
    few to resample: replicate b is the mean of the seeds' AUCs on test resampling b, and the interval
    covers the test images only. Either way every replicate is a mean of AUCs, so the interval lies in
    [0, 1]. Returns (lo, hi, band) with band ``seeds+test`` or ``test``; NaN bounds without replicates."""
    r = np.atleast_2d(np.asarray(replicates, dtype=np.float64))
    r = r[~np.all(np.isnan(r), axis=1)]  # a run without any defined replicate does not count
    k, b = r.shape
    if k == 0 or b == 0:
        return math.nan, math.nan, "test"
    if k < min_seeds:
        chosen, band = r, "test"
    else:
        idx = rng.integers(0, k, size=(k, b))
        chosen, band = r[idx, np.arange(b)[None, :]], "seeds+test"
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, dropped by percentile_ci
        means = np.nanmean(chosen, axis=0)
    lo, hi = percentile_ci(means, level)
    return lo, hi, band


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    k = order.size
    adjusted = np.maximum.accumulate((k - np.arange(k)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def paired_unit_ci(differences: Sequence[float], level: float, iterations: int, rng: np.random.Generator) -> tuple:
    """Mean of paired differences (e.g. over (n, seed) units) and a percentile bootstrap CI over units."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return math.nan, math.nan, math.nan
    if d.size == 1:
        return float(d[0]), math.nan, math.nan
    idx = rng.integers(0, d.size, size=(iterations, d.size))
    lo, hi = percentile_ci(d[idx].mean(axis=1), level)
    return float(d.mean()), lo, hi


# ---------------------------------------------------------------------------------- learning curves
#
# ipl3: AUC(n) = a - b * n^-c (inverse power law with its asymptote a <= 1; needs >= 3 sizes)
# ipl2: AUC(n) = 1 - b * n^-c (the error 1 - AUC falls as a power of n; a straight line in log-log)

MODELS = ("ipl3", "ipl2")


def learning_curve(n: np.ndarray | float, params: Mapping[str, Any]) -> np.ndarray:
    """Evaluate a fitted learning curve at ``n``."""
    n = np.asarray(n, dtype=np.float64)
    a = params["a"] if params["model"] == "ipl3" else 1.0
    return a - params["b"] * n ** (-params["c"])


def n_for_auc(params: Mapping[str, Any], target: float) -> float:
    """Training size at which the fitted curve reaches ``target`` (inf if it never does)."""
    a = params["a"] if params["model"] == "ipl3" else 1.0
    b, c = params["b"], params["c"]
    if not all(map(math.isfinite, (a, b, c))):
        return math.nan
    if b <= 0:  # flat curve at a
        return 1.0 if a >= target else math.inf
    if a <= target or c <= 0:
        return math.inf
    return float((b / (a - target)) ** (1.0 / c))


def _fit_ipl2(n: np.ndarray, auc: np.ndarray) -> dict[str, Any]:
    err = np.clip(1.0 - auc, 1e-6, None)
    slope, intercept = np.polyfit(np.log(n), np.log(err), 1)
    return {"model": "ipl2", "a": 1.0, "b": float(math.exp(intercept)), "c": float(-slope)}


C_GRID = np.geomspace(1e-3, 3.0, 121)


def _ipl3_given_c(n: np.ndarray, auc: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each exponent c the least-squares a, b of AUC = a - b n^-c (linear in a and b) under
    0 <= a <= 1 and b >= 0, and the residual sum of squares."""
    x = n[None, :] ** -np.atleast_1d(c)[:, None]  # (C, N)
    xm, ym = x.mean(axis=1), auc.mean()
    sxx = ((x - xm[:, None]) ** 2).sum(axis=1)
    sxy = ((x - xm[:, None]) * (auc - ym)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        b = np.where(sxx > 0, -sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    b = np.maximum(b, 0.0)
    a = ym + b * xm
    over = a > 1.0  # asymptote above a perfect AUC: fix a = 1, refit b alone
    if np.any(over):
        xx = (x[over] ** 2).sum(axis=1)
        b[over] = np.maximum(((1.0 - auc)[None, :] * x[over]).sum(axis=1) / xx, 0.0)
        a[over] = 1.0
    a = np.clip(a, 0.0, 1.0)
    sse = ((auc[None, :] - (a[:, None] - b[:, None] * x)) ** 2).sum(axis=1)
    return a, b, sse


def _fit_ipl3(n: np.ndarray, auc: np.ndarray) -> dict[str, Any]:
    """Profile least squares: a grid over c, then a bounded 1-D refinement around the best grid point."""
    _, _, sse = _ipl3_given_c(n, auc, C_GRID)
    i = int(np.argmin(sse))
    lo, hi = C_GRID[max(i - 1, 0)], C_GRID[min(i + 1, len(C_GRID) - 1)]
    best = optimize.minimize_scalar(
        lambda c: float(_ipl3_given_c(n, auc, np.array([c]))[2][0]),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-9},
    )
    c = float(best.x) if best.fun <= sse[i] else float(C_GRID[i])
    a, b, _ = _ipl3_given_c(n, auc, np.array([c]))
    return {"model": "ipl3", "a": float(a[0]), "b": float(b[0]), "c": c}


def fit_learning_curve(n: Sequence[float], auc: Sequence[float], model: str = "auto") -> dict[str, Any]:
    """Least-squares fit of AUC(n) to the runs (one point per run). ``auto``: ipl3 with >= 3 distinct
    sizes, ipl2 with 2. Raises ValueError with fewer than 2 sizes."""
    n = np.asarray(n, dtype=np.float64)
    auc = np.asarray(auc, dtype=np.float64)
    keep = ~np.isnan(auc) & (n > 0)
    n, auc = n[keep], auc[keep]
    sizes = np.unique(n).size
    if sizes < 2:
        raise ValueError("a learning curve needs runs at two or more training sizes")
    if model not in ("auto", *MODELS):
        raise ValueError(f"unknown learning-curve model {model!r}")
    if model == "ipl3" or (model == "auto" and sizes >= 3):
        if sizes < 3:
            raise ValueError("the ipl3 learning curve needs three or more training sizes")
        return _fit_ipl3(n, auc)
    return _fit_ipl2(n, auc)


def learning_curve_interval(
    n: Sequence[float],
    auc: Sequence[float],
    target: float,
    model: str,
    level: float,
    iterations: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Fit, the size needed for ``target`` and its bootstrap interval.

    Runs are resampled within each size (a case bootstrap over seeds); when every size has a single run,
    residuals of the fit are resampled instead. The same model family as the full fit is refitted. With
    one run per size and no more runs than parameters the fit is exact and there is no interval (NaN)."""
    n = np.asarray(n, dtype=np.float64)
    auc = np.asarray(auc, dtype=np.float64)
    keep = ~np.isnan(auc)
    n, auc = n[keep], auc[keep]
    fit = fit_learning_curve(n, auc, model)
    estimate = n_for_auc(fit, target)
    groups = [np.flatnonzero(n == v) for v in np.unique(n)]
    replicated = any(len(g) > 1 for g in groups)
    fitted = learning_curve(n, fit)
    residuals = auc - fitted
    values = []
    exact = not replicated and len(n) <= (3 if fit["model"] == "ipl3" else 2)
    for _ in range(0 if exact else iterations):
        if replicated:
            idx = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
            nb, ab = n[idx], auc[idx]
        else:
            nb, ab = n, np.clip(fitted + rng.choice(residuals, size=len(residuals)), 0.0, 1.0)
        try:
            values.append(n_for_auc(fit_learning_curve(nb, ab, fit["model"]), target))
        except (RuntimeError, ValueError):
            values.append(math.nan)
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    alpha = (1.0 - level) / 2.0
    if v.size:
        lo = float(np.quantile(v, alpha, method="lower"))
        hi = float(np.quantile(v, 1.0 - alpha, method="higher"))
    else:
        lo = hi = math.nan
    return {**fit, "n_target": estimate, "n_target_lo": lo, "n_target_hi": hi, "fits": int(v.size)}
