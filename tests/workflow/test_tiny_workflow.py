"""Real snakemake on configs/tiny.yaml in a temporary directory: outputs, incremental reruns, DAG views.

The tests share one working directory and run in file order (each builds on the state the previous
left), as a user's repeated invocations would.
"""

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from ..conftest import ROOT, RULES

pytestmark = pytest.mark.workflow

BASE = ["-s", str(ROOT / "Snakefile"), "--cores", "2", "--configfile", str(ROOT / "configs" / "tiny.yaml")]
RUN = "runs/emphysema/smallcnn/onecycle-finetune-none-default/n20/s0"


def snakemake(workdir, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", *BASE, "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(workdir, *args):
    """Rule -> job count of a dry run (empty when there is nothing to do)."""
    proc = snakemake(workdir, "-n", *args)
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.fullmatch(r"\s*(\S+)\s+(\d+)\s*", line)
        if not m or m.group(1) == "total":
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir)
    return workdir


def test_tiny_study_writes_summary_figure_and_per_run_outputs(study):
    summary = pd.read_csv(study / "results" / "summary.csv")
    assert len(summary) == 2 * 4 * 2 * 2  # targets x recipes x sizes x seeds
    assert summary["test_auc"].between(0, 1).all() and summary["val_auc"].between(0, 1).all()
    assert set(summary["recipe"]) == {
        "onecycle-finetune-none-default",
        "onecycle-finetune-cxr13-transfer",
        "onecycle-finetune-mura-transfer",
        "onecycle-finetune-fractal-transfer",
    }
    assert pd.read_parquet(study / "results" / "summary.parquet").shape == summary.shape
    for fmt in ("png", "pdf"):
        assert (study / "results" / "figures" / f"auc_vs_n.{fmt}").stat().st_size > 1000
    metrics = json.loads((study / RUN / "metrics.json").read_text())
    assert metrics["n_train"] == 20 and 1 <= metrics["selected_epoch"] <= 3
    preds = pd.read_parquet(study / RUN / "predictions.parquet")
    assert len(preds) == metrics["n_test"] and {"image_id", "y_Emphysema", "p_Emphysema"} <= set(preds.columns)
    history = pd.read_csv(study / RUN / "history.csv")
    assert (history["kind"] == "epoch").sum() == 3 and history.loc[history["kind"] == "step", "lr"].notna().all()
    # source-pretrained runs really loaded a checkpoint
    src = json.loads((study / RUN.replace("none-default", "cxr13-transfer") / "metrics.json").read_text())
    assert src["source_checkpoint"] == "models/source/cxr13/smallcnn.pt"
    # progress in the logs, a benchmark file per job
    log = study / "logs" / "finetune" / "emphysema" / "smallcnn" / "onecycle-finetune-none-default" / "n20_s0.log"
    assert "epoch 1/3" in log.read_text() and "epoch 3/3" in log.read_text()
    assert "generate synthetic_chest:" in (study / "logs" / "generate_synthetic" / "synth_chest.log").read_text()
    assert (study / "logs" / "benchmarks" / "pretrain" / "cxr13_smallcnn.tsv").exists()
    # the source task avoids every patient the targets use
    cxr13 = pd.read_parquet(study / "splits" / "cxr13" / "split.parquet")
    emph = pd.read_parquet(study / "splits" / "emphysema" / "split.parquet")
    used = set(emph.loc[emph["split"] != "train", "patient_id"])
    for sub in (study / "splits" / "emphysema").glob("train_n*_s*.csv"):
        used |= set(pd.read_csv(sub, dtype=str)["patient_id"])
    assert used and not used & set(cxr13["patient_id"])


def test_second_run_does_nothing(study):
    assert planned_jobs(study) == {}


def test_changing_a_plot_option_reruns_only_plotting(study, tmp_path):
    extra = tmp_path / "plots.yaml"
    extra.write_text("plots: {dpi: 72, style: ticks}\n")
    BASE.extend([str(extra)])  # later tests keep this setting
    try:
        assert planned_jobs(study) == {"plot_auc_vs_n": 1, "all": 1}
        before = (study / RUN / "metrics.json").stat().st_mtime_ns
        snakemake(study)
        assert (study / RUN / "metrics.json").stat().st_mtime_ns == before
        assert planned_jobs(study) == {}
    finally:
        shutil.copy(extra, study / "plots.yaml")
        BASE[-1] = str(study / "plots.yaml")


def test_deleting_one_run_reruns_only_it_and_reproduces_it(study):
    old = json.loads((study / RUN / "metrics.json").read_text())
    old_preds = pd.read_parquet(study / RUN / "predictions.parquet")
    (study / RUN / "metrics.json").unlink()
    assert planned_jobs(study) == {"finetune": 1, "aggregate": 1, "plot_auc_vs_n": 1, "all": 1}
    snakemake(study)
    assert json.loads((study / RUN / "metrics.json").read_text())["test_auc"] == old["test_auc"]
    (study / RUN / "history.csv").unlink()  # any one output of the run
    snakemake(study)
    new = json.loads((study / RUN / "metrics.json").read_text())
    for key in ("test_auc", "val_auc", "val_loss", "selected_epoch", "run_seed"):
        assert new[key] == old[key], key
    pd.testing.assert_frame_equal(pd.read_parquet(study / RUN / "predictions.parquet"), old_preds)


def test_dry_run_dag_and_rulegraph(study):
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(snakemake(study, "-n"))
    dag = snakemake(study, "--dag", "--forceall").stdout
    assert dag.lstrip().startswith("digraph") and "finetune" in dag
    rulegraph = snakemake(study, "--rulegraph").stdout
    for rule in RULES:
        assert rule in rulegraph
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=rulegraph, capture_output=True, text=True, check=True).stdout
        assert "<svg" in svg


def test_bad_config_key_stops_with_a_message_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochz: 3}\n")
    proc = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "configs" / "tiny.yaml"), str(bad), check=False)
    assert proc.returncode != 0
    assert "unknown config key train.epochz" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_corrupt_image_stops_with_one_message_and_no_partial_cache(study, tmp_path):
    shutil.copytree(study / "raw" / "synth_limb", tmp_path / "raw" / "synth_limb")
    victim = sorted((tmp_path / "raw" / "synth_limb" / "images").glob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated PNG
    proc = snakemake(tmp_path, "cache/synth_limb/w32.npy", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"ERROR in rule cache: image raw/synth_limb/images/{victim.name} cannot be decoded" in out
    assert "Traceback" not in (tmp_path / "logs" / "cache" / "synth_limb_w32.log").read_text()
    leftovers = list((tmp_path / "cache").rglob("*")) if (tmp_path / "cache").exists() else []
    assert [p for p in leftovers if p.is_file()] == []
