"""smalldl.stats: weighted/bootstrap AUC, DeLong, intervals, Holm, learning-curve fits."""

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from smalldl import stats


def scored(m=120, shift=1.0, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(m // 2), np.zeros(m - m // 2)].astype(int)
    p = rng.normal(shift * y, 1.0)
    return y, (np.round(p, 1) if ties else p)


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auc_with_unit_weights_is_the_roc_auc(ties):
    y, p = scored(ties=ties)
    assert stats.weighted_auc(p, y, np.ones((1, len(y))))[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_weighted_auc_with_counts_is_the_auc_of_the_repeated_sample():
    y, p = scored(ties=True, seed=3)
    w = np.random.default_rng(1).integers(0, 4, size=(5, len(y)))
    got = stats.weighted_auc(p, y, w)
    for b in range(5):
        idx = np.repeat(np.arange(len(y)), w[b])
        assert got[b] == pytest.approx(roc_auc_score(y[idx], p[idx]), abs=1e-12)


def test_weighted_auc_is_nan_without_both_classes():
    y, p = scored()
    w = np.ones((1, len(y)))
    w[0, y == 1] = 0
    assert math.isnan(stats.weighted_auc(p, y, w)[0])


def test_stratified_weights_keep_every_class_count_and_are_seeded():
    strata = np.r_[np.ones(30), np.zeros(70)]
    w = stats.bootstrap_weights(100, 50, np.random.default_rng(7), strata)
    assert w.shape == (50, 100)
    assert np.all(w[:, strata == 1].sum(1) == 30) and np.all(w[:, strata == 0].sum(1) == 70)
    assert np.array_equal(w, stats.bootstrap_weights(100, 50, np.random.default_rng(7), strata))
    plain = stats.bootstrap_weights(100, 50, np.random.default_rng(7))
    assert np.all(plain.sum(1) == 100) and not np.all(plain[:, strata == 1].sum(1) == 30)


def test_mean_auc_replicates_skips_undefined_labels_like_the_paper_metric():
    y, p = scored(m=40)
    y2 = np.c_[y, np.zeros_like(y)]  # second label has no positive: undefined, skipped
    p2 = np.c_[p, p]
    ones = np.ones((1, len(y)))
    assert stats.mean_auc_replicates(y2, p2, ones)[0] == pytest.approx(roc_auc_score(y, p))


def test_mean_auc_replicates_masks_uncertain_labels():
    y, p = scored(m=40)
    y2 = np.c_[y, y].astype(np.int8)
    y2[::3, 1] = -1  # uncertain: that image has no weight in label 2's AUC
    rng = np.random.default_rng(0)
    w = rng.integers(0, 3, size=(5, len(y))).astype(np.float32)
    known = y2[:, 1] >= 0
    want = (stats.weighted_auc(p, y, w) + stats.weighted_auc(p[known], y[known], w[:, known])) / 2
    np.testing.assert_allclose(stats.mean_auc_replicates(y2, np.c_[p, p], w), want)


def test_percentile_ci_and_bootstrap_p():
    reps = np.linspace(0, 1, 1001)
    assert stats.percentile_ci(reps, 0.9) == pytest.approx((0.05, 0.95))
    assert stats.bootstrap_p(np.zeros(100)) == 1.0
    assert stats.bootstrap_p(np.full(999, 0.1)) == pytest.approx(2 / 1000)
    assert stats.bootstrap_p(np.r_[np.full(500, -1.0), np.full(500, 1.0)]) == 1.0
    assert math.isnan(stats.percentile_ci(np.full(5, np.nan), 0.95)[0])


def brute_force_delong(y, scores):
    """DeLong's covariance from its definition (placement values over every positive/negative pair)."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(2), psi.mean(1)
    return psi.mean((1, 2)), np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


def test_delong_matches_its_definition_and_sklearn():
    y, a = scored(m=60, seed=1, ties=True)
    _, b = scored(m=60, shift=0.5, seed=2, ties=True)
    scores = np.stack([a, b, (a + b) / 2])
    aucs, cov = stats.delong(y, scores)
    ref_aucs, ref_cov = brute_force_delong(y, scores)
    assert aucs == pytest.approx(ref_aucs) and cov == pytest.approx(ref_cov)
    assert aucs[0] == pytest.approx(roc_auc_score(y, a))


def test_delong_contrast_and_its_agreement_with_the_paired_bootstrap():
    y, a = scored(m=400, shift=1.2, seed=4)
    _, b = scored(m=400, shift=0.6, seed=5)
    same = stats.delong_contrast(y, np.stack([a, a]), [1, -1])
    assert same["diff"] == 0 and same["p"] == 1.0
    test = stats.delong_contrast(y, np.stack([a, b]), [1, -1])
    assert test["diff"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert test["p"] < 0.01
    w = stats.bootstrap_weights(len(y), 2000, np.random.default_rng(0), y)
    diff = stats.weighted_auc(a, y, w) - stats.weighted_auc(b, y, w)
    assert np.std(diff, ddof=1) == pytest.approx(test["se"], rel=0.15)
    assert stats.bootstrap_p(diff) < 0.01


def test_delong_needs_both_classes():
    with pytest.raises(ValueError):
        stats.delong(np.array([1, 0, 0]), np.array([[0.1, 0.2, 0.3]]))


def test_holm():
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = stats.holm([0.5, np.nan])
    assert out[0] == 0.5 and math.isnan(out[1])


def seed_replicates(centres, m=120, iterations=400, seed=0):
    """Bootstrap replicates (seeds x iterations, paired: one resampling of the test images for all) of
    seeds whose scores separate the classes by ``centres`` (probit: AUC = Phi(centre / sqrt 2))."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(m // 2), np.zeros(m - m // 2)].astype(int)
    w = stats.bootstrap_weights(m, iterations, rng, y)
    return np.stack([stats.weighted_auc(rng.normal(c * y, 1.0), y, w) for c in centres])


def test_mean_interval_of_two_far_apart_seeds_covers_test_images_only_and_stays_in_0_1():
    reps = seed_replicates([-1.2, 1.2])  # AUCs about 0.2 and 0.8
    point = reps.mean(axis=0)
    lo, hi, band = stats.mean_interval(reps, 0.95, np.random.default_rng(0))
    assert band == "test" and 0 <= lo <= hi <= 1
    assert (lo, hi) == pytest.approx(stats.percentile_ci(point, 0.95))  # the mean of the seeds per resampling
    # a seed's AUC of 0.2 and one of 0.8: the interval of their mean is never outside [0, 1]
    extreme = np.stack([np.full(50, 0.2), np.full(50, 0.8)])
    assert stats.mean_interval(extreme, 0.95, np.random.default_rng(0))[:2] == pytest.approx((0.5, 0.5))
    one = seed_replicates([1.0])
    assert stats.mean_interval(one, 0.95, np.random.default_rng(0))[:2] == pytest.approx(
        stats.percentile_ci(one[0], 0.95)
    )
    assert math.isnan(stats.mean_interval(np.full((2, 10), np.nan), 0.95, np.random.default_rng(0))[0])


def test_mean_interval_over_seeds_is_wider_than_over_test_images_when_seeds_disagree():
    reps = seed_replicates([0.2, 0.8, 1.4, 2.0, 2.6])  # AUCs from about 0.56 to 0.97
    lo, hi, band = stats.mean_interval(reps, 0.95, np.random.default_rng(0))
    t_lo, t_hi, t_band = stats.mean_interval(reps, 0.95, np.random.default_rng(0), min_seeds=6)
    assert (band, t_band) == ("seeds+test", "test")
    assert 0 <= lo < t_lo and t_hi < hi <= 1 and hi - lo > 1.5 * (t_hi - t_lo)
    # seeds that agree (the same scores): the test images are all that varies
    same = np.repeat(seed_replicates([1.0]), 5, axis=0)
    lo, hi, _ = stats.mean_interval(same, 0.95, np.random.default_rng(0))
    assert (lo, hi) == pytest.approx(stats.mean_interval(same, 0.95, np.random.default_rng(0), min_seeds=6)[:2])


def test_mean_interval_covers_the_mean_auc_over_seeds_in_a_simulation():
    """Seeds vary (separation ~ N(1, 0.35)), the test images are shared by the seeds and drawn anew each
    time; the target is the expected AUC over seeds. The hierarchical interval covers it about 95% of the
    time; the test-images-only interval, blind to the seeds, far less."""
    rng = np.random.default_rng(0)
    truth = float(np.mean(sps.norm.cdf(rng.normal(1.0, 0.35, 200_000) / math.sqrt(2))))
    hits = np.zeros(2)
    sims, m = 150, 100
    y = np.r_[np.ones(m // 2), np.zeros(m // 2)].astype(int)
    for _ in range(sims):
        shared = rng.normal(0, 1, m)  # what makes an image easy or hard, for every seed
        scores = [d * y + 0.5 * shared + math.sqrt(0.75) * rng.normal(0, 1, m) for d in rng.normal(1.0, 0.35, 5)]
        w = stats.bootstrap_weights(m, 200, rng, y)
        reps = np.stack([stats.weighted_auc(s, y, w) for s in scores])
        for j, min_seeds in enumerate((3, 6)):
            lo, hi, _ = stats.mean_interval(reps, 0.95, rng, min_seeds=min_seeds)
            hits[j] += lo <= truth <= hi
    coverage, test_only = hits / sims
    assert coverage >= 0.9 and test_only < 0.85


def test_paired_unit_ci():
    rng = np.random.default_rng(0)
    mean, lo, hi = stats.paired_unit_ci([0.1, 0.12, 0.08, 0.11], 0.95, 500, rng)
    assert mean == pytest.approx(0.1025) and 0.08 <= lo <= mean <= hi <= 0.12
    assert math.isnan(stats.paired_unit_ci([0.1], 0.95, 100, rng)[1])


def test_learning_curve_fit_recovers_an_inverse_power_law():
    n = np.repeat([50, 100, 200, 500, 1000, 2000], 2).astype(float)
    truth = {"model": "ipl3", "a": 0.9, "b": 1.2, "c": 0.6}
    auc = stats.learning_curve(n, truth)
    fit = stats.fit_learning_curve(n, auc)
    assert fit["model"] == "ipl3"
    assert (fit["a"], fit["b"], fit["c"]) == pytest.approx((0.9, 1.2, 0.6), rel=1e-3)
    need = stats.n_for_auc(fit, 0.85)
    assert need == pytest.approx((1.2 / 0.05) ** (1 / 0.6), rel=1e-3)
    assert stats.learning_curve(need, fit) == pytest.approx(0.85)
    assert stats.n_for_auc(fit, 0.95) == math.inf  # above the asymptote


def test_learning_curve_with_two_sizes_fits_the_error_power_law_and_needs_two_sizes():
    n = np.array([20, 20, 40, 40], dtype=float)
    auc = 1 - 2.0 * n**-0.5
    fit = stats.fit_learning_curve(n, auc)
    assert fit["model"] == "ipl2" and (fit["b"], fit["c"]) == pytest.approx((2.0, 0.5))
    with pytest.raises(ValueError, match="two or more"):
        stats.fit_learning_curve([20, 20], [0.7, 0.8])
    with pytest.raises(ValueError, match="three or more"):
        stats.fit_learning_curve(n, auc, "ipl3")


def test_learning_curve_interval_covers_the_truth_on_noisy_runs():
    rng = np.random.default_rng(3)
    truth = {"model": "ipl3", "a": 0.92, "b": 0.9, "c": 0.5}
    n = np.repeat([50, 100, 200, 400, 800], 3).astype(float)
    auc = stats.learning_curve(n, truth) + rng.normal(0, 0.005, n.size)
    out = stats.learning_curve_interval(n, auc, 0.85, "auto", 0.95, 100, np.random.default_rng(0))
    need = stats.n_for_auc(truth, 0.85)
    assert out["n_target_lo"] <= need <= out["n_target_hi"]
    assert out["n_target_lo"] <= out["n_target"] <= out["n_target_hi"] and out["fits"] > 90
    again = stats.learning_curve_interval(n, auc, 0.85, "auto", 0.95, 100, np.random.default_rng(0))
    assert again == out  # seeded
    # single run per size: residual bootstrap
    one = stats.learning_curve_interval(n[::3], auc[::3], 0.85, "auto", 0.95, 50, np.random.default_rng(0))
    assert one["n_target_lo"] <= one["n_target"] <= one["n_target_hi"]
    # one run at each of two sizes: the 2-parameter fit is exact, there is nothing to resample
    exact = stats.learning_curve_interval([20, 40], [0.6, 0.7], 0.8, "auto", 0.95, 50, np.random.default_rng(0))
    assert exact["model"] == "ipl2" and math.isfinite(exact["n_target"]) and exact["fits"] == 0
    assert math.isnan(exact["n_target_lo"]) and math.isnan(exact["n_target_hi"])
