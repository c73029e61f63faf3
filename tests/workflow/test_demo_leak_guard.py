"""The demo (config.yaml, no --configfile) passes the leak guard: its ChestX-ray13 source saw no patient
of either target's validation or test set. Runs the demo's data and split rules and every leak_check job
(no training)."""

import json
import subprocess
import sys

import pytest

from smalldl import config as cfg

from ..conftest import ROOT

pytestmark = pytest.mark.workflow


def test_the_demo_sources_pass_the_leak_guard(tmp_path):
    demo = cfg.load(ROOT / "config.yaml")
    targets = [
        f"splits/{task}/leak_check/{source}.json"
        for task in demo["study"]["targets"]
        for source in sorted(
            {cfg.Recipe.parse(r).source for r in cfg.possible_stage_recipes(demo, task)}
            | {cfg.Recipe.parse(r["recipe"]).source for r in cfg.runs(demo) if r["task"] == task}
        )
        if cfg.leak_links(demo, task, source)
    ]
    assert "splits/emphysema/leak_check/cxr13.json" in targets and "splits/cxr14/leak_check/cxr13.json" in targets
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", "--directory",
           str(tmp_path), *targets]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for path in targets:
        record = json.loads((tmp_path / path).read_text())
        for link in record["checked"]:
            assert not link["same_data"] or link["patients"] == 0, (path, link)
    cxr13 = json.loads((tmp_path / "splits/emphysema/leak_check/cxr13.json").read_text())["checked"]
    assert cxr13[0]["same_data"] and cxr13[0]["patients"] == 0
