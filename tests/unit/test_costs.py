"""smalldl.costs: seconds per rule from Snakemake's benchmark files and per phase of the fine-tuning jobs,
on a run folder written here (benchmarks/demo_costs.py prints them for a real run)."""

import json
import subprocess
import sys

import pytest

from smalldl import costs

from ..conftest import ROOT, load_script

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:01\t1\t1\t1\t1\t0\t0\t0\t1\n")


def run(root, task, n, seed, total, phases):
    bench(root / "logs/benchmarks/finetune" / task / "a" / "r" / f"n{n}_s{seed}.tsv", total)
    out = root / "results" / "runs" / task / "a" / "r" / f"n{n}" / f"s{seed}"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"phase_s": phases}))


PH = {"startup": 2.0, "setup": 1.0, "train": 3.0, "validate": 1.0, "test": 2.0, "write": 0.5}


@pytest.fixture
def workdir(tmp_path):
    run(tmp_path, "t1", 50, 0, 10.0, PH)
    run(tmp_path, "t2", 50, 0, 12.0, {**PH, "test": 3.5})
    bench(tmp_path / "logs/benchmarks/radiomics_model/t1/x.tsv", 4.0)
    bench(tmp_path / "logs/benchmarks/aggregate.tsv", 1.0)
    # a run without phases (written before they were recorded) counts per rule, not per phase
    bench(tmp_path / "logs/benchmarks/finetune/t1/a/r/n100_s0.tsv", 20.0)
    return tmp_path


def test_rule_seconds_sum_every_job_of_a_rule(workdir):
    table = costs.rule_seconds(workdir).set_index("rule")
    assert table.loc["finetune", "jobs"] == 3 and table.loc["finetune", "total_s"] == pytest.approx(42.0)
    assert table.loc["aggregate", "jobs"] == 1 and table.loc["radiomics_model", "total_s"] == 4.0
    assert table["share"].sum() == pytest.approx(1.0)
    assert list(table.index)[0] == "finetune"  # largest first


def test_phases_split_a_job_and_what_the_job_did_not_see_is_outside(workdir):
    runs = costs.finetune_phases(workdir).set_index("task")
    assert len(runs) == 2
    assert runs.loc["t1", "outside"] == pytest.approx(10.0 - 9.5)
    assert runs.loc["t2", "outside"] == pytest.approx(12.0 - 11.0)
    assert runs.loc["t1", "fixed"] == pytest.approx(0.5 + 2.0 + 1.0 + 0.5)
    table = costs.phase_table(costs.finetune_phases(workdir))
    all_ = table[table["task"] == "all"].set_index("phase")
    assert all_.loc["test", "mean_s"] == pytest.approx(2.75)
    assert all_.loc["total", "share"] == pytest.approx(1.0)
    assert all_.loc[list(costs.PHASES), "share"].sum() == pytest.approx(1.0)


def test_no_benchmarks_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no benchmark files"):
        costs.rule_seconds(tmp_path)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "demo_costs.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 1 and "no benchmark files" in out.stderr


def test_the_benchmark_prints_the_fixed_cost_ratio(workdir):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "demo_costs.py"), str(workdir)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "finetune" in out.stdout and "ratio fixed / total = " in out.stdout
    assert "largest phase: train" in out.stdout


def log(workdir, name, elapsed):
    path = workdir / ".snakemake" / "log" / f"{name}.snakemake.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("Building DAG of jobs...\n" + (f"Elapsed time: {elapsed}\n" if elapsed else "error\n"))


def test_the_wall_time_is_the_latest_complete_run_s_elapsed_time(workdir):
    with pytest.raises(FileNotFoundError, match="no complete Snakemake run"):
        costs.elapsed_seconds(workdir)
    log(workdir, "2026-12-07T100000.000000", "0:12:38.359394")
    log(workdir, "2026-12-07T110000.000000", "1 day, 1:00:02.5")
    log(workdir, "2026-12-07T120000.000000", None)  # an interrupted run logs no elapsed time
    assert costs.elapsed_seconds(workdir) == pytest.approx(86400 + 3602.5)
    assert costs.busy_share(30.0, 20.0, 2) == pytest.approx(0.75)


@pytest.mark.parametrize(("elapsed", "code", "word"), [("0:07:59", 0, "met"), ("0:08:01", 1, "MISSED")])
def test_the_time_target_is_checked_against_the_run_s_wall_time(workdir, elapsed, code, word):
    log(workdir, "2026-12-07T100000.000000", elapsed)
    args = [sys.executable, str(ROOT / "benchmarks" / "demo_costs.py"), str(workdir), "--cores", "2"]
    out = subprocess.run([*args, "--check"], capture_output=True, text=True)
    assert out.returncode == code, out.stderr
    assert "target 480 s" in out.stdout and word in out.stdout
    assert "job seconds / (2 cores x wall) = 0.05" in out.stdout  # 47 s of jobs over 2 x ~480 s
    assert subprocess.run(args, capture_output=True, text=True).returncode == 0  # without --check: a report


def test_check_fails_on_a_run_whose_wall_time_is_unknown(workdir):
    """No complete Snakemake log (an interrupted run, a copied folder): --check cannot say the target was met."""
    log(workdir, "2026-12-07T120000.000000", None)
    args = [sys.executable, str(ROOT / "benchmarks" / "demo_costs.py"), str(workdir), "--cores", "2"]
    out = subprocess.run([*args, "--check"], capture_output=True, text=True)
    assert out.returncode == 1 and "no wall time to check against the target" in out.stderr
    assert "no complete Snakemake run" in out.stderr
    assert subprocess.run(args, capture_output=True, text=True).returncode == 0  # a report without --check


def test_fresh_runs_the_demo_as_readme_command_1_in_a_clone_of_this_checkout(monkeypatch, tmp_path):
    bench = load_script("benchmarks/demo_costs.py")
    calls = []
    monkeypatch.setattr(bench.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "clone"))
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    workdir = bench.fresh_run(2)
    assert workdir == str(tmp_path / "clone")
    (clone, _), (snakemake, kw) = calls
    assert clone[:3] == ["git", "clone", "-q"] and clone[3:] == [str(ROOT), workdir]
    assert snakemake[0].endswith("snakemake") and snakemake[1:3] == ["--cores", "2"] and snakemake[-1] == "all"
    assert kw["cwd"] == workdir and kw["env"]["PYTHONPATH"] == workdir and kw["check"]
