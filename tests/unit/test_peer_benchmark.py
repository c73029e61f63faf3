"""benchmarks/peer_fastai.py without fastai (CI does not install the bench extra): its command line, the
message and status when fastai is missing, that importing it does not import fastai, the TTA combination it
gives fastai, the input pipeline it times for ours, and its summary of the training runs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ..conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "peer_fastai.py"
pf = load_script("benchmarks/peer_fastai.py")

#: runs the script as __main__ with fastai unimportable (a None entry in sys.modules makes `import fastai`
#: raise ImportError), whether or not fastai is installed
WITHOUT_FASTAI = (
    "import runpy, sys; sys.modules['fastai'] = None; sys.argv = [{path!r}] + {argv!r}; "
    "runpy.run_path({path!r}, run_name='__main__')"
)


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_help_lists_the_flags_without_fastai():
    out = _run("-c", WITHOUT_FASTAI.format(path=str(SCRIPT), argv=["--help"]))
    assert out.returncode == 0, out.stderr
    for flag in ("--quick", "--workers", "--runs", "--check"):
        assert flag in out.stdout
    assert 'pip install -e ".[bench]"' in out.stdout  # the docstring says how to get fastai


def test_missing_fastai_says_how_to_install_it_and_fails(tmp_path):
    out = _run("-c", WITHOUT_FASTAI.format(path=str(SCRIPT), argv=["--quick", "--workdir", str(tmp_path)]))
    assert out.returncode == 2
    assert 'pip install -e ".[bench]"' in out.stderr
    assert "fastai is not installed" in out.stderr
    assert list(tmp_path.iterdir()) == []  # it stops before preparing any data


def test_importing_the_benchmark_does_not_import_fastai():
    code = (
        "import importlib.util, json, sys; "
        f"s = importlib.util.spec_from_file_location('p', {str(SCRIPT)!r}); m = importlib.util.module_from_spec(s); "
        "s.loader.exec_module(m); print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] == 'fastai')))"
    )
    out = _run("-c", code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_fastai_tta_beta_gives_our_tta_mean():
    """fastai: lerp(mean of the n augmented views, the plain prediction, beta); ours: the mean of the plain
    prediction and the n views (smalldl.evaluate.predict_views)."""
    rng = np.random.default_rng(0)
    for views in (1, 4, 7):
        plain = torch.from_numpy(rng.random((5, 1)))
        augmented = torch.from_numpy(rng.random((views, 5, 1)))
        ours = torch.cat([plain[None], augmented]).mean(0)
        fastai = torch.lerp(augmented.mean(0), plain, pf.tta_beta(views))
        torch.testing.assert_close(fastai, ours)


def test_runs_follow_the_demo_order_and_the_runs_flag():
    pairs = [(50, 0), (50, 1), (100, 0), (100, 1), (200, 0), (200, 1)]
    assert pf.run_pairs(pairs, None) == pairs
    assert pf.run_pairs(pairs, 2) == [(50, 0), (50, 1)]
    assert pf.parse_args(["--quick"]).runs == 1
    assert pf.parse_args([]).runs is None
    assert pf.parse_args(["--quick", "--runs", "3"]).runs == 3


def test_repeats_run_every_pair_again_after_the_demos_runs():
    pairs = [(50, 0), (50, 1)]
    assert pf.run_plan(pairs, 1) == [(50, 0, 0), (50, 1, 0)]
    assert pf.run_plan(pairs, 3) == [(50, 0, 0), (50, 1, 0), (50, 0, 1), (50, 1, 1), (50, 0, 2), (50, 1, 2)]
    assert pf.parse_args([]).repeats == 1 and pf.parse_args(["--repeats", "4"]).repeats == 4
    out = _run("-c", WITHOUT_FASTAI.format(path=str(SCRIPT), argv=["--repeats", "0"]))
    assert out.returncode == 2 and "--repeats must be at least 1, not 0" in out.stderr


def test_the_auc_verdict_is_the_t_interval_of_the_paired_differences():
    noisy = np.array([0.05, -0.04, 0.02, -0.03, 0.01, -0.02])
    low, high, verdict = pf.auc_verdict(noisy)
    assert verdict == "within noise" and low < 0 < high
    # by hand: mean -0.0017, sd 0.0337, t(0.975, 5) = 2.5706 -> half width 0.0353
    assert math.isclose(high - low, 2 * 2.5706 * noisy.std(ddof=1) / math.sqrt(6), rel_tol=1e-4)
    assert pf.auc_verdict(np.array([-0.06, -0.05, -0.07, -0.04]))[2] == "ours lower"
    assert pf.auc_verdict(np.array([0.06, 0.05, 0.07, 0.04]))[2] == "ours higher"
    low, high, verdict = pf.auc_verdict(np.array([-0.2]))
    assert verdict == "one run: no verdict" and math.isnan(low) and math.isnan(high)


def test_a_lower_auc_is_a_miss_under_check(monkeypatch, capsys):
    """main() counts "ours lower" as a missed target (exit 1 with --check) even where the speed is met."""

    def run(wall, auc):
        return {"wall_s": wall, "cpu_s": wall, "auc_tta": auc}

    rows = [{"ours": run(10.0, 0.70 + d), "fastai": run(20.0, 0.80 + d)} for d in (0.0, 0.01, -0.02, 0.03)]
    monkeypatch.setattr(pf, "fastai_missing", lambda: False)
    monkeypatch.setattr(pf, "part_a", lambda args, folder: pf.summarise_a(rows))
    assert pf.main(["--only", "a", "--check"]) == 1
    text = capsys.readouterr().out
    assert "ours lower" in text and "FAIL: (a) ours' test AUC lower than fastai's" in text
    rows = [{"ours": run(10.0, 0.80 + d), "fastai": run(20.0, 0.80 - d)} for d in (0.0, 0.01, -0.02, 0.03)]
    assert pf.main(["--only", "a", "--check"]) == 0
    assert "PASS: targets met" in capsys.readouterr().out


def test_our_pipeline_counts_only_batches_after_the_warm_up(monkeypatch):
    """Batches are drawn as make_batches draws them (a new epoch when one runs out), augmented at the paper's
    crop with flip and rotation; the warm-up batches are run but neither timed nor counted."""
    from smalldl.data import transforms

    seen = []
    real = transforms.augment

    def counting(x, crop, flip, rotate, gen):
        seen.append((x.shape[0], crop, flip, rotate))
        return real(x, crop, flip, rotate, gen)

    monkeypatch.setattr(transforms, "augment", counting)
    arr = np.random.default_rng(0).integers(0, 255, (40, 250, 250), dtype=np.uint8)  # 3 batches an epoch
    rate = pf.ours_pipeline_rate(arr, batches=5, warmup=2, threads=1)
    assert len(seen) == 7
    assert [b for b, *_ in seen] == [16, 16, 8, 16, 16, 8, 16]
    assert {s[1:] for s in seen} == {(pf.PAPER_CROP, True, pf.PAPER_ROTATE)}
    assert math.isfinite(rate) and rate > 0


def test_summary_ratios_are_fastai_over_ours_with_the_paired_auc_difference(capsys):
    def run(wall, cpu, auc):
        return {"wall_s": wall, "cpu_s": cpu, "auc_tta": auc}

    rows = [
        {"ours": run(10.0, 9.0, 0.80), "fastai": run(16.0, 12.0, 0.78)},
        {"ours": run(30.0, 11.0, 0.90), "fastai": run(44.0, 10.0, 0.90)},
    ]
    out = pf.summarise_a(rows)
    assert out["ratio"] == 60.0 / 40.0
    assert out["cpu_ratio"] == 22.0 / 20.0
    text = capsys.readouterr().out
    assert "fastai/ours 1.50" in text and "CPU time fastai/ours 1.10" in text
    assert "ours 0.8500, fastai 0.8400; paired difference +0.0100" in text
