"""benchmarks/inference_calibration.py (issue 25): its simulation's truth, its quick run's table (every section,
sane rates, what varies in each interval) and ``--check``'s exit status when a target is missed, including
when the comparisons go back to the old interval (the test bootstrap alone)."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from smalldl import stats

from ..conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "inference_calibration.py"
ic = load_script("benchmarks/inference_calibration.py")

LINE = re.compile(r"^  sd (\S+): (.+?)\s{2,}(seeds\+test|seeds\+val|test only)\s+(-?[\d.]+) ± ([\d.]+|nan)")


def parse_table(text):
    """{(sd, label): (varies, rate, mc_se, status)} of the benchmark's table, and the section headings."""
    rows = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            status = "MISSED" if "MISSED" in line else "ok" if re.search(r"\bok\b", line) else ""
            rows[(float(m[1]), m[2].strip())] = (m[3], float(m[4]), float(m[5]), status)
    headings = [line for line in text.splitlines() if re.match(r"^[1-5]\. ", line)]
    return rows, headings


def test_the_truth_is_the_expected_auc_over_training_runs():
    rng = np.random.default_rng(1)
    for sd in (0.01, 0.03):
        tau = ic.tau_for_sd(sd)
        mu = ic.mu_for_auc(0.75, tau)
        aucs = sps.norm.cdf((mu + tau * rng.standard_normal(400_000)) / math.sqrt(2.0))
        assert aucs.mean() == pytest.approx(0.75, abs=2e-4)  # E_u Phi((mu + u)/sqrt 2) = Phi(mu/sqrt(2 + tau^2))
        assert aucs.std() == pytest.approx(sd, rel=0.05)  # the run-to-run AUC sd asked for


def test_a_simulated_study_has_every_run_and_its_headline_auc():
    study = ic.simulate(np.random.default_rng(0), 0.01, 0.02)
    s = study.summary
    assert len(s) == len(ic.recipe_delta(0.02)) * len(ic.SIZES) * ic.SEEDS and s["path"].is_unique
    assert set(study.test_images.ids).isdisjoint(study.val_images.ids)
    assert set(study.patients) == set(study.test_images.ids) | set(study.val_images.ids)
    row = s.iloc[0]
    loaded = ic.loader_of(study.test, study.test_images)(row, "test_auc_tta")
    assert loaded["y"].shape == loaded["p"].shape == (len(study.test_images.ids), 1)
    assert stats.mean_auc_replicates(loaded["y"], loaded["p"], np.ones((1, len(loaded["y"]))))[0] == pytest.approx(
        row["headline_auc"]
    )


def test_quick_run_prints_every_section_with_sane_rates(capsys):
    assert ic.main(["--quick"]) == 0
    text = capsys.readouterr().out
    assert "WARNING" not in text  # the headline AUCs agree with the loader's predictions
    rows, headings = parse_table(text)
    assert [h[:2] for h in headings] == ["1.", "2.", "3.", "4.", "5."]
    for key in ("seeds+test =", "seeds+val  =", "test only  ="):  # the legend of what varies
        assert key in text
    sds = sorted({sd for sd, _ in rows})
    assert sds == [0.01, 0.03]
    for (_, label), (varies, rate, se, _) in rows.items():
        assert 0.0 <= rate <= 1.0 and se >= 0.0, label
        assert varies == (
            "test only" if label.startswith("OLD") else "seeds+val" if "recommended" in label else "seeds+test"
        )
    for sd in sds:
        for label in (
            "diff 0, CI of the pooled diff (compare) covers 0",
            "diff -0.02, CI of the pooled diff covers it",
            "mean AUC of 5 seeds (seed_means) covers it",
        ):
            assert 0.8 <= rows[(sd, label)][1] <= 1.0, (sd, label)
        for label in ("diff 0, '>' decided (test_pvalues+decide)", "diff -0.02, '>=' decided (test_pvalues+decide)"):
            assert rows[(sd, label)][1] <= 0.2, (sd, label)
        assert rows[(sd, "cheaper, worse by 0.03: recommended")][1] <= 0.2
        assert (sd, "cheaper, equal: recommended (sanity)") in rows
        assert (sd, "diff +0.05, '>' holds (power)") in rows
    assert rows[(0.01, "diff +0.05, '>' holds (power)")][1] >= 0.8
    # the contrast: at sd 0.03 the old interval (test patients only) covers far less than the new one
    new = rows[(0.03, "diff 0, CI of the pooled diff (compare) covers 0")][1]
    assert rows[(0.03, "OLD diff 0, CI of the pooled diff covers 0")][1] < new - 0.1
    assert "targets missed:" in text
    bands = next(line for line in text.splitlines() if line.startswith("bands of the intervals"))
    assert bands.endswith("comparisons seeds+test; seed_means seeds+test; answer (validation) seeds+test"), bands


def test_check_fails_on_a_missed_target_and_passes_on_met_ones(capsys):
    few = ["--quick", "--studies", "3", "--sds", "0.01", "--check"]
    assert ic.main([*few, "--min-coverage", "1.01"]) == 1
    text = capsys.readouterr().out
    assert "MISSED" in text and "coverage_diff_0.01" in text.split("targets missed:")[1]
    assert ic.main([*few, "--min-coverage", "0", "--max-error", "1", "--max-recommend", "1"]) == 0
    assert "targets missed: 0" in capsys.readouterr().out


def test_check_fails_with_the_old_test_only_interval(monkeypatch, capsys):
    """The old comparison interval (the runs fixed: the paired test bootstrap of the mean over the runs)
    misses the coverage and error targets that the new one meets."""

    def test_only(units, level, min_runs=stats.MIN_RUNS, test_variance=None):
        by_seed = stats.by_seed_means(units)
        est = float(np.mean([v for v, _ in by_seed.values()]))
        reps = np.mean(np.stack([r for _, r in by_seed.values()]), axis=0)
        lo, hi = stats.percentile_ci(reps, level)
        se = float(np.nanstd(reps, ddof=1))
        return stats.RunInterval(est, se, math.inf, lo, hi, len(by_seed), stats.BAND_RUNS)

    monkeypatch.setattr(stats, "paired_interval", test_only)
    assert ic.main(["--quick", "--studies", "15", "--sds", "0.03", "--check"]) == 1
    missed = capsys.readouterr().out.split("targets missed:")[1]
    assert "coverage_diff_0.03" in missed and "false_gt_0.03" in missed
