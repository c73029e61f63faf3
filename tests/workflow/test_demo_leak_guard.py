"""The demo (config.yaml, no --configfile) passes the study gate: no source model saw a patient or an image
of either target's validation or test set. Runs the demo's data and split rules and the gate (no training)."""

import json
import subprocess
import sys

import pytest

from smalldl import config as cfg

from ..conftest import ROOT

pytestmark = pytest.mark.workflow


def test_the_demo_sources_pass_the_study_gate(tmp_path):
    demo = cfg.load(ROOT / "config.yaml")
    pairs = {(p["target"], p["source"]) for p in cfg.gate_pairs(demo)}
    assert {("emphysema", "cxr13"), ("cxr14", "cxr13"), ("emphysema", "mura")} <= pairs
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", "--directory",
           str(tmp_path), "results/splits/study_gate.json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((tmp_path / "results" / "splits" / "study_gate.json").read_text())
    assert {(p["target"], p["source"]) for p in record["pairs"]} == pairs
    for pair in record["pairs"]:
        for link in pair["checked"]:
            assert link["patients"] == 0 and link["shared_files"] == 0, (pair["target"], link)
    cxr13 = next(p for p in record["pairs"] if (p["target"], p["source"]) == ("emphysema", "cxr13"))["checked"]
    assert cxr13[0]["same_data"] and cxr13[0]["patients"] == 0
    # the synthetic chest and limb phantoms are other data: no image file is shared, ids never compared
    mura = next(p for p in record["pairs"] if (p["target"], p["source"]) == ("emphysema", "mura"))["checked"]
    assert not mura[0]["same_data"] and mura[0]["shared_files"] == 0
