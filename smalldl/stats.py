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
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as sps

# ---------------------------------------------------------------------------------------------- AUC


def bootstrap_weights(
    n_images: int,
    iterations: int,
    rng: np.random.Generator,
    strata: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Resampling counts (iterations x n_images): how often each image is drawn in each replicate.

    ``groups`` (e.g. the patient id of each image): whole groups are drawn with replacement, every image
    of a drawn group with it (a cluster bootstrap: the images of one patient are not independent; NIH's
    test set has about 9 images per patient). With ``strata`` (e.g. the binary label) each stratum is
    resampled within itself, so every replicate keeps the original number of positives and negatives
    (pROC's stratified bootstrap); with groups, a group's stratum is the largest of its images' (a patient
    with a positive image is a positive patient). Stored image-major (Fortran order) so that selecting
    and sorting images is a fast row gather."""
    if groups is None:
        unit_of = np.arange(n_images)
        unit_strata = strata
    else:
        groups = np.asarray(groups)
        if len(groups) != n_images:
            raise ValueError(f"{len(groups)} group ids for {n_images} images")
        _, unit_of = np.unique(groups, return_inverse=True)
        unit_of = unit_of.ravel()
        unit_strata = None
        if strata is not None:
            unit_strata = np.full(unit_of.max() + 1 if n_images else 0, -np.inf)
            np.maximum.at(unit_strata, unit_of, np.asarray(strata, dtype=np.float64))
    n_units = int(unit_of.max()) + 1 if n_images else 0
    counts = np.zeros((n_units, iterations), dtype=np.float32)
    if unit_strata is None:
        blocks = [np.arange(n_units)]
    else:
        blocks = [np.flatnonzero(unit_strata == s) for s in np.unique(unit_strata)]
    for idx in blocks:
        k = len(idx)
        if k == 0:
            continue
        draws = rng.integers(0, k, size=(iterations, k)) + (np.arange(iterations) * k)[:, None]
        counts[idx, :] = np.bincount(draws.ravel(), minlength=iterations * k).reshape(iterations, k).T
    weights = counts if groups is None else counts[unit_of]
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


#: Fewest independent training runs (seeds) behind an interval that includes the variation between
#: training runs; with fewer, intervals cover the test images only and no verdict is given.
MIN_RUNS = 3
MIN_SEEDS = MIN_RUNS
#: What an interval includes (``RunInterval.band``): both sources of variation, or the test images only.
BAND_RUNS = "seeds+test"
BAND_TEST = "test"


@dataclass(frozen=True)
class RunInterval:
    """An estimate over training runs with its standard error and interval.

    The unit of inference is the training run: ``se_runs`` is the variation between runs (seeds: each seed
    is an independent draw of the training subsets, the initialisation and the batch order), from the
    jackknife over seeds; ``se_test`` the variation of the test images that the seeds share (a bootstrap of
    test patients with the runs fixed; each run's own test noise is already in the jackknife). The variances
    add; the interval is estimate ± t(df) se with ``effective_df`` (the runs' part at t(k - 1), the test
    part at the normal quantile); the simulation in ``benchmarks/inference_calibration.py`` shows its
    coverage. With fewer than ``MIN_RUNS`` seeds the run part cannot be estimated: ``band`` is
    ``test``, the interval is the test bootstrap's percentile interval, and no verdict may rest on it."""

    estimate: float
    se: float
    df: float
    lo: float
    hi: float
    runs: int
    band: str
    se_runs: float = math.nan
    se_test: float = math.nan

    @property
    def decidable(self) -> bool:
        """Whether the interval includes the variation between runs (enough seeds) and is defined."""
        return self.band == BAND_RUNS and math.isfinite(self.se) and math.isfinite(self.estimate)

    def p_above(self, null: float) -> float:
        """One-sided p-value of 'the true value is above ``null``' (H0: value <= null)."""
        return self._tail(self.estimate - null)

    def p_below(self, null: float) -> float:
        """One-sided p-value of 'the true value is below ``null``' (H0: value >= null)."""
        return self._tail(null - self.estimate)

    def p_two_sided(self, null: float = 0.0) -> float:
        return min(1.0, 2.0 * min(self.p_above(null), self.p_below(null)))

    def _tail(self, distance: float) -> float:
        if not (math.isfinite(self.estimate) and math.isfinite(self.se)):
            return math.nan
        if self.se <= 0:
            return 0.0 if distance > 0 else 1.0
        z = distance / self.se
        return float(sps.t.sf(z, self.df) if math.isfinite(self.df) else sps.norm.sf(z))


NAN_INTERVAL = RunInterval(math.nan, math.nan, math.nan, math.nan, math.nan, 0, BAND_TEST)


def jackknife_variance(leave_one_out: Sequence[float]) -> float:
    """Jackknife variance from the k leave-one-seed-out values of a statistic ((k-1)/k sum of squares;
    for a mean over seeds it is the sample variance over k)."""
    t = np.asarray(leave_one_out, dtype=np.float64)
    t = t[np.isfinite(t)]
    k = t.size
    if k < 2:
        return math.nan
    return float((k - 1) / k * np.sum((t - t.mean()) ** 2))


def run_interval(
    estimate: float,
    leave_one_out: Sequence[float],
    test_replicates: np.ndarray,
    level: float,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    min_runs: int = MIN_RUNS,
    test_variance: float | None = None,
    runs: int | None = None,
) -> RunInterval:
    """The interval of a statistic of k seeds' runs (see ``RunInterval``).

    ``estimate``: the statistic on all runs; ``leave_one_out``: the statistic without each seed in turn
    (k values); ``test_replicates``: the statistic on each bootstrap resampling of the test images (the
    runs' paired replicates, every run fixed). ``bounds``: the statistic's range (an AUC: (0, 1); a
    difference of AUCs: (-1, 1)), to which the interval is clipped. ``test_variance``: the test part's
    variance from elsewhere (DeLong's), instead of the replicates' variance. ``runs``: the number of seeds
    (default: the finite leave-one-out values; one seed has none)."""
    reps = np.asarray(test_replicates, dtype=np.float64).ravel()
    reps = reps[np.isfinite(reps)]
    k = int(np.isfinite(np.asarray(leave_one_out, dtype=np.float64)).sum()) if len(leave_one_out) else 0
    k = k if runs is None else int(runs)
    if not math.isfinite(estimate):
        return NAN_INTERVAL
    var_test = float(np.var(reps, ddof=1)) if reps.size > 1 else math.nan
    if test_variance is not None and math.isfinite(test_variance):
        var_test = float(test_variance)
    lo_b, hi_b = bounds
    if k < min_runs:
        lo, hi = percentile_ci(reps, level) if reps.size else (math.nan, math.nan)
        se = math.sqrt(var_test) if math.isfinite(var_test) else math.nan
        return RunInterval(estimate, se, math.inf, _clip(lo, lo_b, hi_b), _clip(hi, lo_b, hi_b), k, BAND_TEST,
                           math.nan, se)  # fmt: skip
    var_runs = jackknife_variance(leave_one_out)
    var_test = 0.0 if not math.isfinite(var_test) else var_test
    var = var_runs + var_test
    df = effective_df(var_runs, k - 1, var_test, level)
    se = math.sqrt(var)
    q = float(sps.t.ppf(0.5 + level / 2, df) if math.isfinite(df) else sps.norm.ppf(0.5 + level / 2))
    lo, hi = estimate - q * se, estimate + q * se
    return RunInterval(estimate, se, df, _clip(lo, lo_b, hi_b), _clip(hi, lo_b, hi_b), k, BAND_RUNS,
                       math.sqrt(var_runs), math.sqrt(var_test))  # fmt: skip


def effective_df(var_runs: float, df_runs: int, var_test: float, level: float) -> float:
    """The degrees of freedom of the interval: each part at its own quantile, t(k - 1) for the runs' part
    (estimated from k seeds) and the normal one for the test part, added in quadrature, q² (a + b) =
    t² a + z² b, and df the t distribution's whose quantile is q (so that p-values agree with the
    interval). Satterthwaite's df, which takes the test part as known, let the interval under-cover
    (0.92 in ``benchmarks/inference_calibration.py``) when recipes differ and the test part is large; this
    is at least as wide. Infinite without a runs' part."""
    if var_runs <= 0 or df_runs < 1:
        return math.inf
    p = 0.5 + level / 2
    t, z = float(sps.t.ppf(p, df_runs)), float(sps.norm.ppf(p))
    q = math.sqrt((t * t * var_runs + z * z * var_test) / (var_runs + var_test))
    if q - z < 1e-9:
        return math.inf
    if t - q < 1e-12:
        return float(df_runs)
    return float(optimize.brentq(lambda d: float(sps.t.ppf(p, d)) - q, df_runs, 1e7, xtol=1e-6))


def _clip(x: float, lo: float, hi: float) -> float:
    return x if math.isnan(x) else float(min(max(x, lo), hi))


def seed_mean_interval(
    by_seed: Mapping[Any, tuple[float, np.ndarray]],
    level: float,
    bounds: tuple[float, float] = (0.0, 1.0),
    min_runs: int = MIN_RUNS,
    test_variance: float | None = None,
) -> RunInterval:
    """The mean over seeds of a per-seed value (a run's AUC, a paired difference, a mean over sizes) with
    its ``run_interval``: ``by_seed`` maps each seed to (value, its test-bootstrap replicates)."""
    seeds = [s for s, (v, _) in by_seed.items() if math.isfinite(v)]
    if not seeds:
        return NAN_INTERVAL
    values = np.array([by_seed[s][0] for s in seeds], dtype=np.float64)
    reps = np.stack([np.asarray(by_seed[s][1], dtype=np.float64) for s in seeds])
    k = len(seeds)
    loo = (values.sum() - values) / (k - 1) if k > 1 else np.array([math.nan])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, dropped
        mean_reps = np.nanmean(reps, axis=0)
    if test_variance is None and k > 1:
        test_variance = shared_test_variance(reps)
    return run_interval(
        float(values.mean()), loo if k > 1 else [], mean_reps, level, bounds, min_runs, test_variance, runs=k
    )


def shared_test_variance(replicates: np.ndarray) -> float:
    """The part of the test images' variance that the k seeds' values share (k x B paired replicates):
    the mean covariance over pairs of seeds. A mean over seeds varies with the test set by this part
    plus each run's own test noise over k; the jackknife over seeds already holds the latter (it is part
    of how seeds differ), so only the shared part is added to it. Never negative; NaN without two seeds
    with defined replicates."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[:, np.all(np.isfinite(r), axis=0)] if r.ndim == 2 else r
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2:
        return math.nan
    c = np.cov(r)
    k = r.shape[0]
    return float(max(0.0, (c.sum() - np.trace(c)) / (k * (k - 1))))


def by_seed_means(units: Mapping[tuple[Any, Any], tuple[float, np.ndarray]]) -> dict[Any, tuple[float, np.ndarray]]:
    """(n, seed) -> (value, replicates) averaged per seed: a seed's runs at several sizes share its nested
    training subsets, so the seed, not the run, is the independent unit of a mean over sizes."""
    per_seed: dict[Any, list[tuple[float, np.ndarray]]] = {}
    for (_, seed), item in sorted(units.items(), key=lambda kv: (str(kv[0][1]), str(kv[0][0]))):
        per_seed.setdefault(seed, []).append(item)
    return {
        s: (float(np.mean([v for v, _ in items])), np.mean(np.stack([np.asarray(r, np.float64) for _, r in items]), 0))
        for s, items in per_seed.items()
    }


def seed_mean(units: Mapping[tuple[Any, Any], tuple[float, np.ndarray]]) -> float:
    """The point estimate ``paired_interval`` and ``seed_mean_interval(by_seed_means(units))`` give: the
    mean over seeds of each seed's mean over its sizes (NaN without a finite value)."""
    values = [v for v, _ in by_seed_means(units).values() if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def paired_interval(
    units: Mapping[tuple[Any, Any], tuple[float, np.ndarray]],
    level: float,
    min_runs: int = MIN_RUNS,
    test_variance: float | None = None,
) -> RunInterval:
    """A paired difference of two recipes over their shared (n, seed) units (each: the difference of the
    two runs' AUCs and of their paired test replicates): the mean over seeds of each seed's mean over its
    sizes, with ``seed_mean_interval`` (bounds -1, 1)."""
    return seed_mean_interval(by_seed_means(units), level, (-1.0, 1.0), min_runs, test_variance)


def mean_interval(replicates: np.ndarray, level: float, points: Sequence[float] | None = None) -> tuple:
    """Interval of the mean AUC over seeds (one run per seed at one size) from the runs' bootstrap
    replicates (seeds x B; column b of every run is the same resampling of the test images) and their
    point AUCs (default: the replicates' mean): ``seed_mean_interval``. Returns (lo, hi, band)."""
    r = np.atleast_2d(np.asarray(replicates, dtype=np.float64))
    keep = ~np.all(np.isnan(r), axis=1)  # a run without any defined replicate does not count
    if points is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a run without replicates: NaN, left out
            pts = np.nanmean(r, axis=1)
    else:
        pts = np.asarray(points, dtype=np.float64)
    by_seed = {i: (float(pts[i]), r[i]) for i in np.flatnonzero(keep)}
    ci = seed_mean_interval(by_seed, level)
    return ci.lo, ci.hi, ci.band


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


def paired_seed_interval(
    differences: Mapping[tuple[Any, Any], float], level: float, min_runs: int = MIN_RUNS
) -> RunInterval:
    """Mean of paired differences over (n, seed) units with an interval over seeds only (e.g. validation
    margins, whose images are fixed: no test part): the units of one seed share its nested training
    subsets, so a seed's units are averaged first and the seeds are the independent replicates."""
    per_seed: dict[Any, list[float]] = {}
    for (_, seed), d in differences.items():
        if d is not None and math.isfinite(d):
            per_seed.setdefault(seed, []).append(float(d))
    by_seed = {s: (float(np.mean(v)), np.array([math.nan])) for s, v in per_seed.items()}
    if not by_seed:
        return NAN_INTERVAL
    ci = seed_mean_interval(by_seed, level, bounds=(-1.0, 1.0), min_runs=min_runs)
    if ci.band != BAND_RUNS:  # no test part to fall back on
        return RunInterval(ci.estimate, math.nan, math.inf, math.nan, math.nan, ci.runs, BAND_TEST)
    return ci


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
    try:
        return float((b / (a - target)) ** (1.0 / c))
    except OverflowError:  # a nearly flat curve (c -> 0): the target is out of any reach
        return math.inf


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
    seeds: Sequence[Any] | None = None,
    replicates: np.ndarray | None = None,
    min_runs: int = MIN_RUNS,
) -> dict[str, Any]:
    """Fit, the size needed for ``target`` and its bootstrap interval.

    With ``seeds`` (one per run) and at least ``min_runs`` of them, a bootstrap of whole seeds: a seed's
    runs at every size are drawn together (its training subsets are nested, so its points are not
    independent), and with ``replicates`` (runs x B, the runs' paired test bootstrap replicates) refit
    b takes each drawn run's AUC on test resampling b, so the interval covers the training runs and the
    test patients (``band`` seeds+test). With fewer seeds, the test replicates alone (``band`` test; or,
    without replicates, the residuals of the fit). The same model family as the full fit is refitted. With
    one run per size, no replicates and no more runs than parameters the fit is exact: no interval (NaN).
    A percentile interval over few seeds is approximate: the n needed is an exploratory reading."""
    n = np.asarray(n, dtype=np.float64)
    auc = np.asarray(auc, dtype=np.float64)
    keep = ~np.isnan(auc)
    n, auc = n[keep], auc[keep]
    seed_of = None if seeds is None else np.asarray(list(seeds), dtype=object)[keep]
    reps = None if replicates is None else np.asarray(replicates, dtype=np.float64)[keep]
    fit = fit_learning_curve(n, auc, model)
    estimate = n_for_auc(fit, target)
    fitted = learning_curve(n, fit)
    residuals = auc - fitted
    unique_seeds = [] if seed_of is None else list(dict.fromkeys(seed_of.tolist()))
    by_seeds = len(unique_seeds) >= min_runs
    band = BAND_RUNS if by_seeds else BAND_TEST
    exact = reps is None and not by_seeds and len(n) <= (3 if fit["model"] == "ipl3" else 2)
    rows_of = {s: np.flatnonzero(seed_of == s) for s in unique_seeds} if by_seeds else {}
    values = []
    for b in range(0 if exact else iterations):
        if by_seeds:
            drawn = rng.integers(0, len(unique_seeds), size=len(unique_seeds))
            idx = np.concatenate([rows_of[unique_seeds[i]] for i in drawn])
        else:
            idx = np.arange(len(n))
        if reps is not None:
            nb, ab = n[idx], reps[idx, b % reps.shape[1]]
        elif by_seeds:
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
    return {
        **fit, "n_target": estimate, "n_target_lo": lo, "n_target_hi": hi, "fits": int(v.size), "band": band,
        "seeds": len(unique_seeds) if unique_seeds else math.nan,
    }  # fmt: skip
