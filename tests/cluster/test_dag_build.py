"""Cluster reality: `snakemake -n` plans a paper-sized study (~3,000 jobs, built offline on synthetic data)
and benchmarks/dag_build.py measures and prints its CPU time against its 20-s limit. The time itself is the
benchmark's to judge (it prints the ratio; this 2-core machine's speed varies threefold from day to day):
the test checks the plan and the report."""

import re
import subprocess
import sys

from ..conftest import ROOT
from .test_profiles import dag_build as load_dag_build


def test_paper_sized_dag_builds_and_its_cpu_time_is_reported(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "dag_build.py"), "--limit", "20", "--keep", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    pattern = (
        r"paper-sized grid: (\d+) jobs \((\d+) fine-tuning runs\); snakemake -n \(whole process\) ([\d.]+) s CPU"
        r".*limit 20 s, ratio ([\d.]+)"
    )
    m = re.search(pattern, proc.stdout)
    assert m, proc.stdout
    # the paper's grid: 4 targets x 2 archs x 10 recipes x 7 sizes x 5 seeds, plus what they need
    assert int(m.group(2)) == 2800 and int(m.group(1)) > 3000
    assert float(m.group(3)) > 0 and abs(float(m.group(4)) - float(m.group(3)) / 20) < 0.01
    # a dry run: no output of any rule was written
    assert sorted(p.name for p in (tmp_path / "grid").iterdir()) == [".snakemake"]


def test_check_makes_a_dag_over_the_limit_fail_the_benchmark(monkeypatch, tmp_path):
    """--check (as the other benchmarks): exit 1 when a DAG took more CPU than --limit; without it the
    benchmark only reports."""
    dag_build = load_dag_build()
    monkeypatch.setattr(dag_build, "measure", lambda name, workdir, files, limit: False)  # over the limit
    assert dag_build.main(["--keep", str(tmp_path)]) == 0
    assert dag_build.main(["--keep", str(tmp_path), "--check"]) == 1
    monkeypatch.setattr(dag_build, "measure", lambda name, workdir, files, limit: True)
    assert dag_build.main(["--keep", str(tmp_path), "--check"]) == 0
