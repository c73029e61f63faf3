"""Real snakemake on configs/tiny.yaml in a temporary directory: outputs, incremental reruns, DAG views.

The tests share one working directory and run in file order (each builds on the state the previous
left), as a user's repeated invocations would.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import ROOT, TINY_RULES, TINY_STUDY_WROTE

pytestmark = pytest.mark.workflow

BASE = ["-s", str(ROOT / "Snakefile"), "--cores", "2", "--configfile", str(ROOT / "configs" / "tiny.yaml")]
ARCH = "efficientnet_lite0"
START = "onecycle-finetune-imagenet-transfer"  # the tiny study's listed recipe
RUN = f"results/runs/emphysema/{ARCH}/{START}/n20/s0"


def snakemake(workdir, *args, check=True, env=None):
    cmd = [sys.executable, "-m", "snakemake", *BASE, "--directory", str(workdir), *args]
    env = {**os.environ, **env} if env else None
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=900, env=env)
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


def tiny_config():
    """configs/tiny.yaml over the schema's defaults (as snakemake --configfile builds it), validated."""
    from smalldl import config as cfg

    return cfg.load(ROOT / "configs" / "tiny.yaml")


def plot_jobs():
    """Plotting rule -> jobs, from the figures the tiny config asks for (smalldl.figures.plan)."""
    from smalldl import figures

    rule = {"auc_vs_n": "plot_auc_vs_n", "history": "plot_history", "axis": "plot_axis", "radiomics": "plot_axis"}
    jobs = {}
    for spec in figures.plan(tiny_config()).values():
        name = rule.get(spec["kind"], "plot_learning_curves")
        jobs[name] = jobs.get(name, 0) + 1
    return jobs


#: Statistics rules downstream of the summary (they never read plot settings).
# what new statistics rerun: the final model of each target reads seed_means.csv and answer.csv (its card)
STATS_JOBS = {"bootstrap": 1, "compare": 1, "learning_curves": 1, "findings": 1, "results_readme": 1, "final_model": 2}


@pytest.fixture(scope="module")
def study(tiny_study):
    """The session's finished tiny study (tests/conftest.py), shared with the SLURM test's local run."""
    return tiny_study


def test_the_study_writes_only_under_results_resources_and_logs(study, request):
    """Snakemake's documented layout (smalldl/layout.py): what the run added to its working directory, listed
    as it ended, is resources/, results/, logs/ and Snakemake's .snakemake/, nothing else."""
    from smalldl import layout

    wrote = request.config.stash[TINY_STUDY_WROTE]
    assert {"resources", "results", "logs"} <= set(wrote), wrote
    assert set(wrote) <= set(layout.TOP_LEVEL), f"the study wrote outside {layout.TOP_LEVEL}: {wrote}"
    for folder in (layout.RAW, layout.INDEX, layout.CACHE, layout.SPLITS, layout.MODELS, layout.RUNS):
        assert (study / folder).is_dir(), folder
    assert (study / layout.RADIOMICS).is_dir()  # configs/tiny.yaml runs the radiomics baselines


def test_tiny_study_writes_summary_figure_and_per_run_outputs(study):
    summary = pd.read_csv(study / "results" / "summary.csv")
    cnn = summary[summary["arch"] == ARCH]
    run_dirs = {p.parent for p in (study / "results" / "runs").glob(f"*/{ARCH}/*/n*/s*/metrics.json")}
    assert len(cnn) == len(run_dirs) and len(cnn) >= 2 * 5 * 2  # targets x (>= 5 recipes) x sizes x 1 seed
    assert cnn["test_auc"].between(0, 1).all() and cnn["val_auc"].between(0, 1).all()
    assert pd.read_parquet(study / "results" / "summary.parquet").shape == summary.shape
    for fmt in ("png", "pdf"):
        assert (study / "results" / "figures" / f"auc_vs_n.{fmt}").stat().st_size > 1000
    metrics = json.loads((study / RUN / "metrics.json").read_text())
    assert metrics["n_train"] == 20 and 1 <= metrics["selected_epoch"] <= 3
    assert 0 <= metrics["test_auc_tta"] <= 1 and metrics["tta_views"] == 4 and metrics["lr_source"] == "config"
    preds = pd.read_parquet(study / RUN / "predictions.parquet")
    assert len(preds) == metrics["n_test"]
    assert {"image_id", "y_Emphysema", "p_Emphysema", "p_tta_Emphysema"} <= set(preds.columns)
    history = pd.read_csv(study / RUN / "history.csv", dtype={"trainable": str})
    steps = history[history["kind"] == "step"]
    assert (history["kind"] == "epoch").sum() == 3 and steps["lr"].notna().all()
    assert steps[["lr_group1", "lr_group2", "lr_group3", "momentum"]].notna().all().all()
    assert not (study / RUN / "resume.pt").exists()
    # the ImageNet source holds the packaged EfficientNet-Lite0 weights; task sources were pretrained
    imagenet = study / "results" / "models" / "source" / "imagenet"
    assert json.loads((imagenet / f"{ARCH}.json").read_text())["tensors"] == 294
    assert metrics["source_checkpoint"] == f"results/models/source/imagenet/{ARCH}.pt"
    # progress in the logs, a benchmark file per job
    log = study / "logs" / "finetune" / "emphysema" / ARCH / START / "n20_s0.log"
    assert "epoch 1/3" in log.read_text() and "epoch 3/3" in log.read_text()
    assert "generate synthetic_chest:" in (study / "logs" / "generate_synthetic" / "synth_chest.log").read_text()
    assert (study / "logs" / "benchmarks" / "pretrain" / f"cxr13_{ARCH}.tsv").exists()
    # the source task avoids every patient the targets use
    cxr13 = pd.read_parquet(study / "results" / "splits" / "cxr13" / "split.parquet")
    emph = pd.read_parquet(study / "results" / "splits" / "emphysema" / "split.parquet")
    used = set(emph.loc[emph["split"] != "train", "patient_id"])
    for sub in (study / "results" / "splits" / "emphysema").glob("train_n*_s*.csv"):
        used |= set(pd.read_csv(sub, dtype=str)["patient_id"])
    assert used and not used & set(cxr13["patient_id"])


def test_stage_wise_study_chains_the_winners_on_validation_auc(study):
    config = tiny_config()
    stages = config["study"]["stages"]
    finetune_logs = list((study / "logs" / "finetune").rglob("*.log"))
    for task in config["study"]["targets"]:
        previous = None
        for k, spec in enumerate(stages["vary"]):
            stage = json.loads((study / "results" / "stages" / task / ARCH / f"stage{k}.json").read_text())
            assert stage["axis"] == spec["axis"] and stage["previous"] == previous
            base = previous or stages["start"]
            assert stage["candidates"] == cfg_candidates(config, k, previous, task)
            axes = ["schedule", "transfer", "source", "init"]
            for cand in stage["candidates"]:  # each candidate differs from the base in this axis and the
                # axes the stage sets (and transfer/init, which a source change keeps valid) only
                diff = [
                    axes[i] for i, (a, b) in enumerate(zip(cand.split("-"), base.split("-"), strict=True)) if a != b
                ]
                assert set(diff) <= {spec["axis"], *spec["set"], "transfer", "init"}, (cand, base)
                assert cand.split("-")[axes.index(spec["axis"])] in spec["values"]
                for axis, value in spec["set"].items():
                    assert cand.split("-")[axes.index(axis)] == value, (cand, spec)
                runs = [
                    json.loads((study / f"results/runs/{task}/{ARCH}/{cand}/n{n}/s{s}/metrics.json").read_text())
                    for n in config["study"]["sizes"]
                    for s in config["study"]["seeds"]
                ]
                mean_val = sum(r["val_auc_tta"] for r in runs) / len(runs)
                assert stage["scores"][cand] == pytest.approx(mean_val)  # validation, never test
            best = max(stage["scores"].values())
            assert stage["scores"][stage["winner"]] == best
            previous = stage["winner"]
    # the authors' sequence: training methods from scratch, transfer methods and inits from ImageNet
    for task in config["study"]["targets"]:
        decided = [
            json.loads((study / "results" / "stages" / task / ARCH / f"stage{k}.json").read_text()) for k in range(4)
        ]
        assert all(c.endswith("-none-default") for c in decided[0]["candidates"])
        assert all("-imagenet-" in c for c in decided[1]["candidates"] + decided[3]["candidates"])
        assert {c.split("-")[3] for c in decided[3]["candidates"]} == {"transfer", "moments", "momentsconv"}
        assert {c.split("-")[2] for c in decided[2]["candidates"]} == {"none", "imagenet", "cxr13", "mura", "fractal"}
    # a recipe asked for by several stages (each stage's base) is trained once
    assert len(finetune_logs) == len(
        {p.parent for p in (study / "results" / "runs").glob(f"*/{ARCH}/*/n*/s*/metrics.json")}
    )


def cfg_candidates(config, k, previous, task):
    from smalldl import config as cfg

    return cfg.stage_candidates(config, k, previous, task)


def test_tiny_study_radiomics_features_models_and_best(study):
    config = tiny_config()
    rad, grid = config["radiomics"], config["study"]
    assert set(rad["featuresets"]) == {"paper79", "pyradiomics"} and len(rad["models"]) >= 2
    summary = pd.read_parquet(study / "results" / "summary.parquet")
    for featureset in rad["featuresets"]:
        table = pd.read_parquet(study / "results" / "radiomics" / f"synth_chest-{featureset}.parquet")
        values = table.iloc[:, 1:].to_numpy()
        assert table["image_id"].is_unique and values.shape[1] >= 79 and (abs(values) < float("inf")).all()
        log = (study / "logs" / "radiomics_features" / f"synth_chest-{featureset}.log").read_text()
        assert f"radiomics {featureset}: {len(table)}/{len(table)} (100%)" in log
        for task in grid["targets"]:
            labels = config["tasks"][task]["labels"]
            split = pd.read_parquet(study / "results" / "splits" / task / "split.parquet")
            test_ids = list(split.loc[(split["split"] == "test") & split["selected"], "image_id"])
            for n in grid["sizes"]:
                for seed in grid["seeds"]:
                    subset = pd.read_csv(study / "results" / "splits" / task / f"train_n{n}_s{seed}.csv", dtype=str)
                    assert set(subset["image_id"]) | set(test_ids) <= set(table["image_id"])
                    run = study / "results" / "runs" / task / f"radiomics_{featureset}"
                    runs = {}
                    for model in [*rad["models"], "best"]:
                        out = run / model / f"n{n}" / f"s{seed}"
                        metrics = runs[model] = json.loads((out / "metrics.json").read_text())
                        assert metrics["family"] == "radiomics" and metrics["recipe"] == model
                        assert metrics["n_train"] == n and 0 <= metrics["test_auc"] <= 1
                        preds = pd.read_parquet(out / "predictions.parquet")
                        assert list(preds["image_id"]) == test_ids
                        assert list(preds.columns) == ["image_id", *[f"{k}_{c}" for c in labels for k in "yp"]]
                    ranked = sorted(rad["models"], key=lambda m: -(runs[m]["val_auc"] or -1))  # stable: first on ties
                    assert runs["best"]["chosen_model"] == ranked[0]
                    assert runs["best"]["test_auc"] == runs[ranked[0]]["test_auc"]
        assert (study / "logs" / "benchmarks" / "radiomics_features" / f"synth_chest-{featureset}.tsv").exists()
    # the aggregation treats them like the CNN runs
    rows = summary[summary["family"] == "radiomics"]
    sizes = len(grid["targets"]) * len(grid["sizes"]) * len(grid["seeds"])
    assert len(rows) == sizes * len(rad["featuresets"]) * (len(rad["models"]) + 1)
    assert set(rows["arch"]) == {f"radiomics_{f}" for f in rad["featuresets"]}


def test_second_run_does_nothing(study):
    assert planned_jobs(study) == {}


def test_results_tables_figures_and_report(study):
    from smalldl import figures

    config = tiny_config()
    res = study / "results"
    # Table 1 from the split manifests
    table1 = pd.read_csv(res / "table1.csv")
    for task in config["study"]["targets"]:
        counts = json.loads((study / "results" / "splits" / task / "manifest.json").read_text())["counts"]
        for label in config["tasks"][task]["labels"]:
            row = table1[(table1["task"] == task) & (table1["label"] == label)].iloc[0]
            assert row["role"] == "target"
            assert [row[f"{s}_positives"] for s in ("train", "val", "test")] == [
                counts[s]["positives"][label] for s in ("train", "val", "test")
            ]
    # every planned figure, in every format
    plan = figures.plan(config)
    for path in figures.figure_files(plan, config["plots"]["formats"]):
        assert (study / path).stat().st_size > 1000, path
    # uncertainty: a CI around each run's AUC, means over seeds, comparisons, stages, learning curves
    summary = pd.read_parquet(res / "summary.parquet")
    run_ci = pd.read_csv(res / "run_ci.csv")
    assert len(run_ci) == len(summary) and (run_ci["lo"] <= run_ci["hi"]).all()
    assert run_ci["auc"].to_numpy() == pytest.approx(summary["headline_auc"].to_numpy(), abs=1e-6)
    means = pd.read_csv(res / "seed_means.csv")
    assert len(means) == len(summary.groupby(["task", "arch", "recipe", "n"]))
    # one seed: intervals over the test images only, inside [0, 1]
    assert (means["band"] == "test").all() and means[["ci_lo", "ci_hi"]].stack().between(0, 1).all()
    comparisons = pd.read_csv(res / "comparisons.csv")
    # one seed: how much training runs vary is unknown, so no p-value and no verdict rests on the intervals
    assert len(comparisons) and comparisons["p"].isna().all() and (comparisons["band"] == "test").all()
    stages = pd.read_csv(res / "stages.csv")
    for path in sorted((res / "stages").rglob("stage*.json")) if (res / "stages").exists() else []:
        stage = json.loads(path.read_text())
        task, arch = path.parts[-3], path.parts[-2]
        row = stages[(stages["task"] == task) & (stages["arch"] == arch) & (stages["stage"] == stage["stage"] + 1)]
        assert row["winner"].tolist() == [stage["winner"]]
    assert len(stages) and set(stages["winner"]) <= set(summary["recipe"])
    curves = pd.read_csv(res / "learning_curves.csv")
    assert len(curves) == len(summary.groupby(["task", "arch", "recipe"]))
    readme = (res / "README.md").read_text()
    assert "## Stage winners" in readme and f"`{stages.iloc[0]['winner']}`" in readme
    # the answer first, per target: the recipe to use, what the intervals cover; also in the report
    answer = readme.split("## Answer", 1)[1].split("## Findings", 1)[0]
    for task in config["study"]["targets"]:
        assert f"### {task}" in answer
    assert answer.count("**Use `") == len(config["study"]["targets"]) and "over the test patients only" in answer
    assert "**Too few runs to compare**: 1 seed" in answer
    assert "## How much data is needed" in readme  # tiny.yaml sets results.target_auc
    # the paper's claims, each tested on the tiny study's runs or marked not run
    from smalldl.results.findings import CLAIMS, VERDICTS

    found = pd.read_csv(res / "findings.csv", dtype={"n": str})
    assert set(found["claim"]) == {c.id for c in CLAIMS} and set(found["verdict"]) <= set(VERDICTS)
    assert set(found.loc[found["claim"] != "n_needed", "verdict"]) <= {"too few runs", "not run"}  # one seed
    assert set(found.loc[found["verdict"] != "not run", "claim"]) >= {
        "schedule",
        "source_vs_none",
        "transfer_vs_moments",
    }
    assert readme.index("## Answer") < readme.index("## Findings") < readme.index("## Stage winners")
    assert "| one-cycle >= regular |" in readme
    # every source model with its chain and validation AUC
    sources = pd.read_csv(res / "source_models.csv").set_index("source")
    assert set(sources.index) == set(config["sources"])
    assert sources.loc["cxr13", "chain"] == "imagenet -> cxr13" and sources.loc["mura", "chain"] == "fractal -> mura"
    assert sources.loc["imagenet", "flag"] == "published weights"
    assert set(sources.loc[["cxr13", "mura", "fractal"], "flag"]) <= {"learned", "not learned"}
    assert "## Source models" in readme
    for name, row in sources.iterrows():
        auc = "–" if pd.isna(row["val_auc"]) else f"{row['val_auc']:.3f}"
        assert f"| {name} | {ARCH} | {row['chain']} |" in readme and f"| {auc} [" in readme, name
    # the HTML report: every figure with its caption
    snakemake(study, "--report", "results/report.html")
    html = (res / "report.html").read_text(errors="replace")
    assert len(html) > 100_000
    for fig_id in plan:
        assert f"{fig_id}.png" in html, fig_id
    assert "Learning curves" in html and config["study"]["targets"][0] in html and "answer.html" in html
    assert "findings.csv" in html and "source_models.csv" in html
    assert "model_card.html" in html and "cam_emphysema.png" in html  # the final model's section


def test_the_final_model_is_the_recommended_recipe_and_predict_reproduces_its_test_auc(study):
    """results/final/{task}/: the recommended recipe's runs at the largest size, retrained (equal to the study's
    runs), exported; `smalldl predict` on the study's own test images gives the recorded test AUC exactly."""
    from smalldl.jobs.final import recommended
    from smalldl.metrics import auc_per_label, mean_auc

    config = tiny_config()
    n = max(config["study"]["sizes"])
    for task in config["study"]["targets"]:
        final = study / "results" / "final" / task
        metrics = json.loads((final / "metrics.json").read_text())
        arch, recipe = recommended(study / "results" / "answer.csv", task)
        assert (metrics["arch"], metrics["recipe"], metrics["n"]) == (arch, recipe, n)
        spec = json.loads((final / "model" / "model.json").read_text())
        assert spec["recipe"] == recipe and spec["labels"] == config["tasks"][task]["labels"] and spec["commit"]
        assert spec["preprocess"]["width"] == config["preprocess"]["width"]
        # only the final runs keep weights; each reproduced its study run
        for seed in config["study"]["seeds"]:
            run = final / "runs" / arch / recipe / f"n{n}" / f"s{seed}"
            study_run = json.loads(
                (study / "results" / "runs" / task / arch / recipe / f"n{n}" / f"s{seed}" / "metrics.json").read_text()
            )
            again = json.loads((run / "metrics.json").read_text())
            assert (run / "model.pt").is_file() and again["test_auc"] == study_run["test_auc"]
        assert not list((study / "results" / "runs").rglob("model.pt"))
        # predict the study's test images with the console script's module, in another order
        tests = pd.read_csv(final / "test_predictions.csv")
        out = study / f"predict_{task}.csv"
        proc = subprocess.run(
            [sys.executable, "-m", "smalldl.cli", "predict", str(final / "model"), *tests["image"][::-1],
             "--out", str(out), "--quiet"],
            capture_output=True, text=True, cwd=study, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        pred = pd.read_csv(out).merge(tests, on="image", suffixes=("", "_job"))
        assert len(pred) == len(tests)
        names = spec["outputs"]
        y = pred[[f"y_{k}" for k in names]].to_numpy()
        p = pred[[f"p_{k}" for k in names]].to_numpy()
        assert mean_auc(auc_per_label(y, p, names)) == metrics["test_auc"]
        out.unlink()
        # the card: intended use, calibration and operating points, and the figures in place
        card = (final / "model_card.md").read_text()
        for words in ("Not a medical device", "Operating points", "Brier", "Limitations", recipe):
            assert words in card, words
        points = {(r["label"], r["point"]) for r in metrics["operating_points"] if r["view"] == "all"}
        assert points == {(k, pt) for k in names for pt in ("sens0.90", "sens0.95", "youden")}
        assert metrics["cam"]["sample"] and (study / "results" / "figures" / f"cam_{task}.png").stat().st_size > 5000
        assert (study / "results" / "figures" / f"reliability_{task}.png").stat().st_size > 5000


def test_changing_a_plot_option_reruns_only_plotting(study, tmp_path):
    extra = tmp_path / "plots.yaml"
    extra.write_text("plots: {dpi: 72, style: ticks}\n")
    BASE.extend([str(extra)])  # later tests keep this setting
    try:
        expected = plot_jobs()
        assert set(expected) == {"plot_auc_vs_n", "plot_history", "plot_axis", "plot_learning_curves"}
        assert planned_jobs(study) == {**expected, "all": 1}
        before = (study / RUN / "metrics.json").stat().st_mtime_ns
        snakemake(study)
        assert (study / RUN / "metrics.json").stat().st_mtime_ns == before
        assert planned_jobs(study) == {}
    finally:
        shutil.copy(extra, study / "plots.yaml")
        BASE[-1] = str(study / "plots.yaml")


def test_source_models_start_from_their_recipe_and_a_changed_recipe_reruns_only_what_uses_it(study, tmp_path):
    from smalldl.jobs._shared import file_sha256

    models = study / "results" / "models" / "source"
    imagenet, fractal = (file_sha256(models / s / f"{ARCH}.pt") for s in ("imagenet", "fractal"))
    cxr13 = json.loads((models / "cxr13" / f"{ARCH}.json").read_text())
    mura = json.loads((models / "mura" / f"{ARCH}.json").read_text())
    assert cxr13["chain"] == ["imagenet", "cxr13"] and cxr13["start_sha256"] == imagenet
    assert mura["chain"] == ["fractal", "mura"] and mura["start_sha256"] == fractal
    history = pd.read_csv(models / "cxr13" / f"{ARCH}.history.csv", dtype={"trainable": str})
    assert history.loc[history["kind"] == "step", "trainable"].iloc[0] == "3"  # gradual: the head first
    # every training job passed the study gate first
    gate = json.loads((study / "results" / "splits" / "study_gate.json").read_text())
    leak = next(p for p in gate["pairs"] if (p["target"], p["source"]) == ("emphysema", "cxr13"))
    assert leak["checked"] == [{"source": "cxr13", "task": "cxr13", "same_data": True, "patients": 0,
                                "source_images": 0, "target_images": 0, "target_test_images": 0,
                                "shared_files": 0}]  # fmt: skip
    # mura's recipe changes: mura is pretrained again, and what it feeds, and nothing else
    extra = tmp_path / "mura.yaml"
    extra.write_text("sources: {mura: {recipe: onecycle-gradual-fractal-transfer}}\n")
    BASE.append(str(extra))
    try:
        planned = planned_jobs(study)
    finally:
        BASE.pop()
    mura_runs = [p for p in (study / "results" / "runs").glob(f"*/{ARCH}/*-mura-*/n*/s*/metrics.json")]
    assert mura_runs
    # the source stage of each target compares the mura runs: it is decided again
    targets = {p.relative_to(study / "results" / "runs").parts[0] for p in mura_runs}
    assert planned == {
        "pretrain": 1, "finetune": len(mura_runs), "select_stage": len(targets), "aggregate": 1,
        "source_models": 1, **STATS_JOBS, **plot_jobs(), "all": 1,
    }  # fmt: skip


#: A run's outputs besides metrics.json (whose timings differ run to run)
OUTPUTS = ("predictions.parquet", "val_predictions.parquet", "history.csv")


def test_deleting_one_run_reruns_only_it_and_reproduces_it(study):
    old = json.loads((study / RUN / "metrics.json").read_text())
    old_preds = pd.read_parquet(study / RUN / "predictions.parquet")
    (study / RUN / "metrics.json").unlink()
    # the run, the decisions of the stages that compared it (cheap; the winner could change), the
    # aggregation and everything downstream of it; no other training
    stages = [
        json.loads(p.read_text()) for p in (study / "results" / "stages" / "emphysema" / ARCH).glob("stage*.json")
    ]
    compared = sum(START in stage["candidates"] for stage in stages)
    assert planned_jobs(study) == {
        "finetune": 1, **({"select_stage": compared} if compared else {}), "aggregate": 1, **STATS_JOBS,
        **plot_jobs(), "all": 1,
    }  # fmt: skip
    snakemake(study)
    assert json.loads((study / RUN / "metrics.json").read_text())["test_auc"] == old["test_auc"]
    # the run in a child of the fork server (smalldl/forkserver.py), as the study ran it, and in its own
    # process: the same bytes
    log = study / "logs" / "finetune" / "emphysema" / ARCH / START / "n20_s0.log"

    def last_start():
        return [line for line in log.read_text().splitlines() if ": start (pid " in line][-1]

    assert "in a child of the fork server" in last_start()
    served = {name: (study / RUN / name).read_bytes() for name in OUTPUTS}
    (study / RUN / "metrics.json").unlink()
    snakemake(study, env={"SMALLDL_FORK_SERVER": "0"})
    assert "in a child of the fork server" not in last_start()
    new = json.loads((study / RUN / "metrics.json").read_text())
    for key in ("test_auc", "val_auc", "val_loss", "selected_epoch", "run_seed"):
        assert new[key] == old[key], key
    pd.testing.assert_frame_equal(pd.read_parquet(study / RUN / "predictions.parquet"), old_preds)
    assert {name: (study / RUN / name).read_bytes() for name in OUTPUTS} == served


def test_dry_run_dag_and_rulegraph(study):
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(snakemake(study, "-n"))
    dag = snakemake(study, "--dag", "--forceall").stdout
    assert dag.lstrip().startswith("digraph") and "finetune" in dag
    rulegraph = snakemake(study, "--rulegraph").stdout
    for rule in TINY_RULES:
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
    raw = Path("resources") / "raw" / "synth_limb"
    shutil.copytree(study / raw, tmp_path / raw)
    victim = sorted((tmp_path / raw / "images").glob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated PNG
    proc = snakemake(tmp_path, "resources/cache/synth_limb/w32.npy", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"ERROR in rule cache: image {raw}/images/{victim.name} cannot be decoded" in out
    assert "Traceback" not in (tmp_path / "logs" / "cache" / "synth_limb_w32.log").read_text()
    cache = tmp_path / "resources" / "cache"
    leftovers = list(cache.rglob("*")) if cache.exists() else []
    assert [p for p in leftovers if p.is_file()] == []
