"""A training job killed with SIGKILL mid-epoch and rerun by snakemake resumes from its last epoch
checkpoint and ends with exactly the metrics of an uninterrupted run (CPU)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from ..conftest import ROOT

pytestmark = pytest.mark.workflow

RUN = "results/runs/emphysema/efficientnet_lite0/onecycle-finetune-none-default/n40/s0"
OUTPUTS = ("metrics.json", "predictions.parquet", "history.csv")


def snakemake_cmd(workdir, extra):
    return [
        sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "1", "--directory", str(workdir),
        "--configfile", str(ROOT / "configs" / "tiny.yaml"), str(extra), "--", f"{RUN}/metrics.json",
    ]  # fmt: skip


def test_sigkilled_training_job_resumes_and_matches_an_uninterrupted_run(tmp_path):
    extra = tmp_path / "longer.yaml"
    extra.write_text("train: {epochs: 8}\nstudy: {recipes: [onecycle-finetune-none-default], stages: null}\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(snakemake_cmd(work, extra), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    straight = json.loads((work / RUN / "metrics.json").read_text())
    straight_history = pd.read_csv(work / RUN / "history.csv")
    assert not (work / RUN / "resume.pt").exists()  # removed once the run is complete

    for name in OUTPUTS:
        (work / RUN / name).unlink()
    log = (
        work
        / "logs"
        / "finetune"
        / "emphysema"
        / "efficientnet_lite0"
        / "onecycle-finetune-none-default"
        / "n40_s0.log"
    )
    log.unlink()
    job = subprocess.Popen(snakemake_cmd(work, extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    resume = work / RUN / "resume.pt"
    pid = None
    deadline = time.time() + 600
    while time.time() < deadline and job.poll() is None:
        if pid is None and log.exists():
            m = re.search(r"finetune: start \(pid (\d+)", log.read_text())
            pid = int(m.group(1)) if m else None
        if pid is not None and resume.exists():
            os.kill(pid, signal.SIGKILL)  # mid-epoch: the first epoch's checkpoint has just been written
            break
        time.sleep(0.02)
    out, _ = job.communicate(timeout=300)
    assert pid is not None and job.returncode != 0, out[-3000:]
    saved = torch.load(resume, map_location="cpu", weights_only=True)
    assert 1 <= saved["epoch"] < 8
    assert not (work / RUN / "metrics.json").exists()

    proc = subprocess.run(snakemake_cmd(work, extra), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"resumed from {RUN}/resume.pt after epoch {saved['epoch']}" in log.read_text()
    resumed = json.loads((work / RUN / "metrics.json").read_text())
    for key in ("test_auc", "test_auc_tta", "val_auc", "val_loss", "selected_epoch", "selected_state_sha256"):
        assert resumed[key] == straight[key], key
    pd.testing.assert_frame_equal(pd.read_csv(work / RUN / "history.csv"), straight_history)
    assert not resume.exists()
