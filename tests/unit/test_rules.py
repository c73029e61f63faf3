"""House rules for the Snakefiles: every rule has log, benchmark, threads and resources (mem_mb, runtime),
training rules request gpu from config, and the Snakefile imports nothing heavy at DAG-build time."""

import re
import subprocess
import sys

from ..conftest import ROOT, RULES


def rule_blocks():
    text = "\n".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    blocks = re.split(r"^(?:rule|checkpoint) (\w+):\n", text, flags=re.M)
    return dict(zip(blocks[1::2], blocks[2::2], strict=True))


def test_every_rule_declares_log_benchmark_threads_resources():
    blocks = rule_blocks()
    assert set(RULES) <= set(blocks)
    for name, body in blocks.items():
        body = re.split(r"\n(?:rule|checkpoint) ", body)[0]
        for directive in ("log:", "benchmark:", "threads:", "resources:", "conda:"):
            assert f"    {directive}" in body, f"rule {name} has no {directive}"
        assert "mem_mb=" in body and "runtime=" in body, f"rule {name}: resources need mem_mb and runtime"
    for name in ("pretrain", "finetune", "lr_find"):
        assert "gpu=" in blocks[name], f"training rule {name} must request gpu (from config)"


def test_building_the_dag_does_not_import_torch(tmp_path):
    code = (
        "import sys; from snakemake.cli import main; sys.argv=['snakemake','-n','-q','-s',sys.argv[1],"
        "'--directory',sys.argv[2]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported while building the DAG'\nprint('ok')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "Snakefile"), str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
