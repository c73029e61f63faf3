"""A stage's epochs (study.stages.vary[k].epochs) reach its fine-tuning jobs: run for real on a tiny own
study, the stage's candidates train for the stage's epochs, the listed recipe of the same axes for
train.epochs, each in a run of its own, with one lr finder sweep per recipe, recorded in metrics.json
with the lr used and where it came from."""

import json
import os
import subprocess
import sys

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.workflow

CONFIG = """\
datasets: {mine: {kind: fractal, params: {n_categories: 2, images_per_category: 16, image_size: 32}}}
preprocess: {width: 32}
tasks: {shapes: {dataset: mine, type: multilabel, labels: [category]}}
study:
  targets: [shapes]
  archs: [smallcnn]
  recipes: [onecycle-finetune-none-default]
  sizes: [8]
  seeds: [0]
  stages:
    start: onecycle-finetune-none-default
    vary: [{axis: schedule, values: [onecycle, regular], epochs: 2}]
train: {epochs: 3, batch_size: 4, crop: 28, tta: 0, device: cpu, lr_finder: {enabled: true, size: 8, steps: 10}}
"""


def test_a_stage_s_candidates_train_for_its_epochs_in_runs_of_their_own(tmp_path):
    (tmp_path / "own.yaml").write_text(CONFIG)
    runs = {
        "onecycle-finetune-none-default": 3,
        "onecycle-finetune-none-default-e2": 2,
        "regular-finetune-none-default-e2": 2,
    }
    targets = [f"results/runs/shapes/smallcnn/{recipe}/n8/s0/metrics.json" for recipe in runs]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", "--configfile",
           str(tmp_path / "own.yaml"), "--directory", str(tmp_path), *targets]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for (recipe, epochs), path in zip(runs.items(), targets, strict=True):
        record = json.loads((tmp_path / path).read_text())
        assert (record["recipe"], record["epochs"], record["epochs_run"]) == (recipe, epochs, epochs)
        assert record["lr_source"] == "finder"
        sweep = json.loads(
            (tmp_path / "results/runs/shapes/smallcnn" / recipe.removesuffix("-e2") / "lr_find.json").read_text()
        )
        assert record["max_lr"] == sweep["lr"]
    sweeps = sorted(p.parent.name for p in (tmp_path / "results/runs/shapes/smallcnn").glob("*/lr_find.json"))
    assert sweeps == ["onecycle-finetune-none-default", "regular-finetune-none-default"]
