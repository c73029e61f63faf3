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


def test_mean_interval_with_fewer_than_three_seeds_covers_the_test_images_only_and_stays_in_0_1():
    reps = seed_replicates([-1.2, 1.2])  # AUCs about 0.2 and 0.8
    point = reps.mean(axis=0)
    lo, hi, band = stats.mean_interval(reps, 0.95)
    assert band == "test" and 0 <= lo <= hi <= 1
    assert (lo, hi) == pytest.approx(stats.percentile_ci(point, 0.95))  # the mean of the seeds per resampling
    extreme = np.stack([np.full(50, 0.2), np.full(50, 0.8)])
    assert stats.mean_interval(extreme, 0.95)[:2] == pytest.approx((0.5, 0.5))
    one = seed_replicates([1.0])
    assert stats.mean_interval(one, 0.95)[:2] == pytest.approx(stats.percentile_ci(one[0], 0.95))
    assert math.isnan(stats.mean_interval(np.full((2, 10), np.nan), 0.95)[0])


def test_mean_interval_is_a_t_interval_over_the_seeds_plus_the_shared_test_variance():
    """Five seeds: estimate ± t(df) se, se² = s²/k + the seeds' mean pairwise covariance over the test
    replicates, df from each part at its own quantile (``effective_df``); the interval stays in [0, 1]."""
    reps = seed_replicates([0.2, 0.8, 1.4, 2.0, 2.6])  # AUCs from about 0.56 to 0.97
    points = reps.mean(axis=1)
    lo, hi, band = stats.mean_interval(reps, 0.95, points)
    assert band == "seeds+test" and 0 <= lo < hi <= 1
    k = len(points)
    c = np.cov(reps)
    shared = (c.sum() - np.trace(c)) / (k * (k - 1))
    v_runs, v_test = points.var(ddof=1) / k, max(shared, 0)
    se = math.sqrt(v_runs + v_test)
    # each part at its own quantile: the runs' at t(k - 1), the test patients' at the normal one
    half = math.sqrt(sps.t.ppf(0.975, k - 1) ** 2 * v_runs + sps.norm.ppf(0.975) ** 2 * v_test)
    assert (lo, hi) == pytest.approx((max(0, points.mean() - half), min(1, points.mean() + half)), abs=1e-6)
    assert stats.effective_df(v_runs, k - 1, 0.0, 0.95) == pytest.approx(k - 1)
    assert stats.effective_df(0.0, k - 1, v_test, 0.95) == math.inf
    df = stats.effective_df(v_runs, k - 1, v_test, 0.95)
    assert k - 1 <= df and sps.t.ppf(0.975, df) * se == pytest.approx(half, rel=1e-4)
    mixed = stats.effective_df(1.0, 4, 3.0, 0.95)  # a test part 3x the runs': between t(4) and normal
    assert 4 < mixed < 1e6 and sps.t.ppf(0.975, mixed) ** 2 * 4 == pytest.approx(
        sps.t.ppf(0.975, 4) ** 2 + 3 * 1.96**2, rel=1e-3
    )
    # far wider than the test images alone
    t_lo, t_hi = stats.percentile_ci(reps.mean(axis=0), 0.95)
    assert hi - lo > 1.5 * (t_hi - t_lo)


def test_jackknife_variance_of_a_mean_is_its_squared_standard_error():
    x = np.array([0.71, 0.74, 0.69, 0.80, 0.77])
    loo = (x.sum() - x) / (len(x) - 1)
    assert stats.jackknife_variance(loo) == pytest.approx(x.var(ddof=1) / len(x))


def test_mean_interval_covers_the_mean_auc_over_seeds_at_five_seeds_in_a_simulation():
    """Seeds vary (separation ~ N(1, 0.35)), the test images are shared by the seeds and drawn anew each
    time; the target is the expected AUC over seeds. With 5 seeds the interval covers it at least 93% of
    the time (the hierarchical percentile bootstrap it replaces covered 89-92%)."""
    rng = np.random.default_rng(0)
    truth = float(np.mean(sps.norm.cdf(rng.normal(1.0, 0.35, 200_000) / math.sqrt(2))))
    hits = 0
    sims, m = 400, 100
    y = np.r_[np.ones(m // 2), np.zeros(m // 2)].astype(int)
    for _ in range(sims):
        shared = rng.normal(0, 1, m)  # what makes an image easy or hard, for every seed
        scores = [d * y + 0.5 * shared + math.sqrt(0.75) * rng.normal(0, 1, m) for d in rng.normal(1.0, 0.35, 5)]
        w = stats.bootstrap_weights(m, 200, rng, y)
        reps = np.stack([stats.weighted_auc(s, y, w) for s in scores])
        points = np.array([stats.weighted_auc(s, y, np.ones((1, m)))[0] for s in scores])
        lo, hi, _ = stats.mean_interval(reps, 0.95, points)
        hits += lo <= truth <= hi
    assert hits / sims >= 0.93


def test_paired_interval_averages_a_seeds_sizes_first_and_tests_over_seeds():
    """Units (n, seed): a seed's runs at its sizes share nested training subsets, so the seed is the unit."""
    units = {}
    rng = np.random.default_rng(1)
    for seed, effect in enumerate([0.05, 0.02, 0.04, 0.03]):
        for n in (50, 100, 200):
            units[(n, seed)] = (effect + 0.001 * n / 50, rng.normal(effect, 0.001, 300))
    ci = stats.paired_interval(units, 0.95)
    per_seed = np.array([0.05, 0.02, 0.04, 0.03]) + 0.001 * np.mean([1, 2, 4])
    assert ci.runs == 4 and ci.band == "seeds+test"
    assert ci.estimate == pytest.approx(per_seed.mean())
    assert ci.se_runs == pytest.approx(per_seed.std(ddof=1) / 2)  # 4 seeds, not 12 runs
    assert ci.lo < ci.estimate < ci.hi and ci.p_two_sided(0.0) < 0.05
    assert ci.p_above(0.0) < 0.01 and ci.p_below(0.0) > 0.99
    two = stats.paired_interval({k: v for k, v in units.items() if k[1] < 2}, 0.95)
    assert two.band == "test" and not two.decidable and two.runs == 2
    one = stats.paired_interval({k: v for k, v in units.items() if k[1] == 0}, 0.95)
    assert one.runs == 1 and one.band == "test" and one.lo < one.hi and not one.decidable  # one seed: test only


def test_paired_seed_interval_without_test_replicates_needs_three_seeds():
    d = {(50, 0): 0.02, (100, 0): 0.04, (50, 1): 0.01, (100, 1): 0.03, (50, 2): 0.05, (100, 2): 0.03}
    ci = stats.paired_seed_interval(d, 0.95)
    per_seed = np.array([0.03, 0.02, 0.04])
    half = sps.t.ppf(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3)
    assert (ci.estimate, ci.lo, ci.hi) == pytest.approx((0.03, 0.03 - half, 0.03 + half))
    few = stats.paired_seed_interval({k: v for k, v in d.items() if k[1] < 2}, 0.95)
    assert math.isnan(few.lo) and few.band == "test"


def test_patient_bootstrap_draws_whole_patients_and_keeps_positive_patients():
    groups = np.repeat(np.arange(40), 3)  # 40 patients of 3 images
    strata = (np.arange(120) < 30).astype(int)  # patients 0-9 positive
    w = stats.bootstrap_weights(120, 200, np.random.default_rng(0), strata, groups=groups)
    per_patient = w.reshape(200, 40, 3)
    assert np.all(per_patient == per_patient[:, :, :1])  # a patient's images are drawn together
    assert np.all(per_patient[:, :10, 0].sum(1) == 10) and np.all(per_patient[:, 10:, 0].sum(1) == 30)
    # one image per patient: the image bootstrap, draw for draw
    assert np.array_equal(
        stats.bootstrap_weights(50, 20, np.random.default_rng(3), strata[:50], groups=np.arange(50)),
        stats.bootstrap_weights(50, 20, np.random.default_rng(3), strata[:50]),
    )


def test_patient_bootstrap_is_wider_than_the_image_bootstrap_when_a_patients_images_agree():
    """Nine images per patient, with a patient effect: resampling images one by one understates the AUC's
    variance; resampling patients does not (its SE matches the spread over fresh test sets)."""
    rng = np.random.default_rng(0)

    def test_set():
        pos = rng.random(60) < 0.3
        effect = rng.normal(0, 1.0, 60)
        pid = np.repeat(np.arange(60), 9)
        y = pos[pid].astype(int)
        score = 1.0 * y + effect[pid] + rng.normal(0, 0.5, pid.size)
        return y, score, pid

    fresh = [stats.weighted_auc(s, y, np.ones((1, y.size)))[0] for y, s, _ in (test_set() for _ in range(300))]
    y, s, pid = test_set()
    by_image = stats.weighted_auc(s, y, stats.bootstrap_weights(y.size, 500, rng, y)).std()
    by_patient = stats.weighted_auc(s, y, stats.bootstrap_weights(y.size, 500, rng, y, groups=pid)).std()
    assert by_image < 0.6 * np.std(fresh) and by_patient == pytest.approx(np.std(fresh), rel=0.35)


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
    # a nearly flat curve: the size needed overflows a float, it is never reached
    assert stats.n_for_auc({"model": "ipl3", "a": 0.9, "b": 0.5, "c": 1e-3}, 0.8) == math.inf


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
    assert out["band"] == "test"  # no seeds given: nothing says how runs vary
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


def test_learning_curve_interval_draws_whole_seeds_and_test_replicates():
    """Seeds are drawn whole (a seed's nested subsets make its sizes one unit), and with the runs' test
    replicates each refit takes replicate b: the interval includes runs and test patients."""
    rng = np.random.default_rng(5)
    truth = {"model": "ipl3", "a": 0.92, "b": 0.9, "c": 0.5}
    sizes = np.array([50, 100, 200, 400, 800], dtype=float)
    n, auc, seeds = [], [], []
    for seed in range(5):
        offset = rng.normal(0, 0.01)  # a seed's draw lifts or lowers all its sizes together
        for v in sizes:
            n.append(v)
            auc.append(float(stats.learning_curve(v, truth)) + offset + rng.normal(0, 0.002))
            seeds.append(seed)
    n, auc = np.array(n), np.array(auc)
    reps = auc[:, None] + rng.normal(0, 0.004, (len(n), 200))
    out = stats.learning_curve_interval(
        n, auc, 0.85, "auto", 0.95, 200, np.random.default_rng(0), seeds=seeds, replicates=reps
    )
    assert out["band"] == "seeds+test" and out["seeds"] == 5
    assert out["n_target_lo"] < out["n_target"] < out["n_target_hi"]
    few = stats.learning_curve_interval(
        n[:10], auc[:10], 0.85, "auto", 0.95, 200, np.random.default_rng(0), seeds=seeds[:10], replicates=reps[:10]
    )
    assert few["band"] == "test"
