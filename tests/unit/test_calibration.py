"""Calibration and operating points on cases with answers computed by hand (smalldl/calibration.py)."""

import math

import numpy as np
import pytest

from smalldl import calibration as cal


def test_brier_and_ece_by_hand():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.85, 0.15, 0.65, 0.35])
    # (0.0225 + 0.0225 + 0.1225 + 0.1225) / 4
    assert cal.brier(y, p) == pytest.approx(0.0725)
    # bins of 0.1: 0.15 -> bin 1 (observed 0, mean 0.15), 0.35 -> bin 3 (0 vs 0.35), 0.65 -> bin 6
    # (1 vs 0.65), 0.85 -> bin 8 (1 vs 0.85): (0.15 + 0.35 + 0.35 + 0.15) / 4
    assert cal.ece(y, p) == pytest.approx(0.25)
    bins = cal.reliability(y, p)
    assert [b["count"] for b in bins] == [0, 1, 0, 1, 0, 0, 1, 0, 1, 0]
    assert math.isnan(bins[0]["mean_p"]) and bins[8]["observed"] == 1.0
    # uncertain labels (-1) are left out
    assert cal.brier(np.array([1, -1]), np.array([1.0, 0.3])) == 0.0


def test_a_calibrated_model_has_small_ece_and_temperature_near_one():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 20000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert cal.ece(y, p) < 0.02
    assert cal.fit_temperature(y, p, "binary") == pytest.approx(1.0, abs=0.05)
    # overconfident logits (x3): the fitted temperature undoes it, and keeps every label's order (its AUC)
    z = np.log(p / (1 - p)) * 3
    over = 1 / (1 + np.exp(-z))
    t = cal.fit_temperature(y, over, "binary")
    assert t == pytest.approx(3.0, rel=0.05)
    fixed = cal.apply_temperature(over, t, "binary")
    assert np.array_equal(np.argsort(fixed, kind="stable"), np.argsort(over, kind="stable"))
    chosen = cal.choose_temperature(y, over, "binary")
    assert chosen["used"] and chosen["nll_after"] < chosen["nll_before"]
    assert cal.apply_temperature(over, 1.0, "binary") is over


def test_thresholds_on_validation_by_hand():
    # positives 0.9 0.8 0.7 0.6 0.3 (five), negatives 0.5 0.4 0.2 0.1
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.5, 0.4, 0.2, 0.1])
    # sensitivity >= 0.90 of 5 positives: all 5, so the threshold is the lowest positive, 0.3
    assert cal.threshold_for_sensitivity(y, p, 0.90) == 0.3
    # >= 0.8: 4 positives, threshold 0.6
    assert cal.threshold_for_sensitivity(y, p, 0.80) == 0.6
    # Youden: t=0.6 gives sens 0.8 spec 1 (J 0.8); t=0.3 sens 1, spec 0.5 (J 0.5)
    assert cal.youden_threshold(y, p) == 0.6
    c = cal.confusion(y, p, 0.3)
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (5, 2, 2, 0)
    assert c["sensitivity"] == 1 and c["specificity"] == 0.5 and c["ppv"] == pytest.approx(5 / 7)
    assert c["npv"] == 1


def test_operating_points_read_on_test_with_patient_intervals():
    y_val = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
    p_val = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.5, 0.4, 0.2, 0.1])
    y_test = np.array([1, 1, 0, 0, 0, 0])
    p_test = np.array([0.95, 0.5, 0.65, 0.2, 0.1, 0.05])
    patients = np.array(["a", "b", "c", "d", "e", "f"])
    rows = {r["point"]: r for r in cal.operating_points(y_val, p_val, y_test, p_test, patients, iterations=500)}
    assert set(rows) == {"sens0.90", "sens0.95", "youden"}
    you = rows["youden"]  # threshold 0.6 on test: TP 1 (0.95), FN 1 (0.5), FP 1 (0.65), TN 3
    assert you["threshold"] == 0.6 and (you["tp"], you["fn"], you["fp"], you["tn"]) == (1, 1, 1, 3)
    assert you["sensitivity"] == 0.5 and you["specificity"] == 0.75 and you["ppv"] == 0.5 and you["npv"] == 0.75
    assert you["prevalence"] == pytest.approx(1 / 3)
    assert 0 <= you["specificity_lo"] <= 0.75 <= you["specificity_hi"] <= 1
    s90 = rows["sens0.90"]  # threshold 0.3: both positives, FP 1
    assert s90["sensitivity"] == 1 and s90["specificity"] == 0.75
    # stratified by patient: every replicate keeps both positives, so the sensitivity interval is a point
    assert s90["sensitivity_lo"] == s90["sensitivity_hi"] == 1
