"""smalldl.results and the results jobs (smalldl.jobs.results) on generated run folders (the schema the
training and radiomics jobs write)."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smalldl import config as cfg
from smalldl import figures, stats
from smalldl.data.splits import split_counts
from smalldl.errors import InputError
from smalldl.jobs import results as jobs
from smalldl.results import answer, comparisons, intervals, summary
from smalldl.results.curves import learning_curves
from smalldl.stages import best_candidate
from smalldl.tta import tta_else_plain

from ..conftest import ROOT
from .results_fixtures import make_study, write_run

SCRATCH = "onecycle-finetune-none-default"
CXR13 = "onecycle-finetune-cxr13-transfer"
MURA = "onecycle-finetune-mura-transfer"
REGULAR = "regular-finetune-cxr13-transfer"
SETTINGS = {
    "metric": "test_auc_tta",
    "ci": 0.95,
    "bootstrap": 300,
    "comparison": "bootstrap",
    "equivalence_margin": 0.02,
    "target_auc": 0.8,
    "learning_curve": {"model": "auto", "bootstrap": 40},
}


def aggregate(paths, out_parquet, out_csv):
    return jobs.aggregate(
        metrics=paths, out_parquet=out_parquet, out_csv=out_csv, metric="test_auc_tta", select_on="val_auc_tta"
    )


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run folders are relative to the working directory, as in the workflow
    paths = make_study(Path("."), [SCRATCH, CXR13, MURA, REGULAR], seeds=(0, 1, 2))
    aggregate(paths, "results/summary.parquet", "results/summary.csv")
    return paths


def load_summary():
    return pd.read_parquet("results/summary.parquet")


# ------------------------------------------------------------------------------------------ summary


def test_summary_has_one_row_per_run_with_axes_metrics_per_label_and_timing(study):
    table = load_summary()
    assert len(table) == len(study) == 2 * 4 * 3 * 3
    assert pd.read_csv("results/summary.csv").shape == table.shape
    for col in ("task", "arch", "recipe", "schedule", "transfer", "source", "init", "n", "seed", "val_auc",
                "val_auc_tta", "test_auc", "test_auc_tta", "wall_time_s", "images_per_s", "test_auc_per_label[A]",
                "test_auc_per_label_tta[Emphysema]", "train_positives[C]", "family", "path"):  # fmt: skip
        assert col in table, col
    assert table[["task", "arch", "recipe", "n", "seed"]].equals(
        table[["task", "arch", "recipe", "n", "seed"]].sort_values(["task", "arch", "recipe", "n", "seed"])
    )
    row = table[(table["recipe"] == CXR13) & (table["task"] == "multi")].iloc[0]
    assert row["source"] == "cxr13" and row["labels"] == "A;B;C"
    assert row["headline_auc"] == row["test_auc_tta"] and row["headline_metric"] == "test_auc_tta"
    assert row["select_auc"] == row["val_auc_tta"]


def test_headline_falls_back_to_plain_auc_without_tta(tmp_path):
    a = write_run(tmp_path, "emph", "resnet18", CXR13, 20, 0, tta=False)
    b = write_run(tmp_path, "emph", "resnet18", SCRATCH, 20, 0)
    m = json.loads(b.read_text())
    m["test_auc_tta"] = None  # undefined
    b.write_text(json.dumps(m))
    table = summary.read_metrics([a, b])
    assert (table["headline_auc"] == table["test_auc"]).all()
    assert (table["headline_metric"] == "test_auc").all()
    assert (table["select_auc"] == table[["val_auc_tta", "val_auc"]].bfill(axis=1).iloc[:, 0]).all()
    plain = summary.read_metrics([a, b], metric="test_auc")
    assert (plain["headline_metric"] == "test_auc").all()


def test_radiomics_runs_and_unknown_keys_of_mixed_type_aggregate(tmp_path):
    a = write_run(tmp_path, "emph", "radiomics_paper79", "best", 20, 0, family="radiomics", tta=False, q=0.5)
    b = write_run(tmp_path, "emph", "resnet18", CXR13, 20, 0)
    m = json.loads(b.read_text())
    m["extra"] = "text"
    b.write_text(json.dumps(m))
    m = json.loads(a.read_text())
    m["extra"] = 3.5
    a.write_text(json.dumps(m))
    table = aggregate([a, b], tmp_path / "s.parquet", tmp_path / "s.csv")
    assert set(table["family"]) == {"radiomics", "cnn"}
    assert table.loc[table["family"] == "radiomics", "featureset"].iloc[0] == "paper79"
    assert pd.read_parquet(tmp_path / "s.parquet")["extra"].tolist() == ["3.5", "text"]


def test_bad_metrics_name_the_file_and_leave_no_summary(tmp_path):
    good = write_run(tmp_path, "emph", "resnet18", CXR13, 20, 0)
    bad = write_run(tmp_path, "emph", "resnet18", SCRATCH, 20, 0)
    m = json.loads(bad.read_text())
    del m["test_auc"]
    bad.write_text(json.dumps(m))
    out = tmp_path / "results" / "summary.parquet"
    with pytest.raises(InputError, match=rf"{bad}: missing key\(s\) test_auc"):
        aggregate([good, bad], out, tmp_path / "results" / "summary.csv")
    bad.write_text("{not json")
    with pytest.raises(InputError, match=f"run metrics {bad} cannot be read"):
        aggregate([good, bad], out, tmp_path / "results" / "summary.csv")
    assert not out.exists() and not (tmp_path / "results" / "summary.csv").exists()


# ------------------------------------------------------------------------------------------ Table 1


def test_table1_counts_positives_per_task_label_and_split(tmp_path):
    split = pd.DataFrame(
        {
            "image_id": [str(i) for i in range(10)],
            "patient_id": [str(i // 2) for i in range(10)],
            "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 2,
            "selected": [True] * 9 + [False],
            "Emphysema": [1, 1, 1, 0, 0, 0, 1, 0, 1, 1],
        }
    )
    task = {"type": "binary", "labels": ["Emphysema"]}
    (tmp_path / "manifest.json").write_text(json.dumps({"counts": split_counts(split, task)}))
    manifests = {"emph": tmp_path / "manifest.json"}
    table = jobs.table1(manifests=manifests, targets=["emph"], tasks={"emph": task}, out_csv=tmp_path / "t1.csv")
    row = pd.read_csv(tmp_path / "t1.csv").iloc[0]
    assert table.shape[0] == 1 and row["role"] == "target"
    assert (row["train_positives"], row["val_positives"], row["test_positives"]) == (3, 1, 1)
    assert (row["train_images"], row["test_images"], row["train_patients"]) == (6, 1, 3)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="bad.json"):
        summary.table1({"emph": tmp_path / "bad.json"}, ["emph"], {"emph": task})


def test_table1_says_how_many_positives_each_training_size_holds_and_where_negatives_fill_in(tmp_path):
    """Hernia-like: 6 training positives among 40. From n = 14 the balanced subsets hold every positive and
    the rest are negatives (never a duplicate; the authors' code upsampled positives): Table 1 says so,
    with the counts the subset job draws."""
    from smalldl.data.splits import draw_subset

    n_train = 40
    split = pd.DataFrame(
        {
            "image_id": [str(i) for i in range(50)],
            "patient_id": [str(i) for i in range(50)],
            "split": ["train"] * n_train + ["val"] * 5 + ["test"] * 5,
            "selected": [True] * 50,
            "Hernia": [1 if i % 7 == 0 and i < 42 else 0 for i in range(n_train)] + [1, 0] * 5,
        }
    )
    task = {"type": "binary", "labels": ["Hernia"], "balance": True}
    (tmp_path / "manifest.json").write_text(json.dumps({"counts": split_counts(split, task)}))
    sizes = [4, 8, 12, 14, 20]
    table = jobs.table1(
        manifests={"hernia": tmp_path / "manifest.json"}, targets=["hernia"], tasks={"hernia": task},
        sizes=sizes, out_csv=tmp_path / "t1.csv",
    )  # fmt: skip
    row = table.iloc[0]
    assert row["train_positives"] == 6
    assert row["train_subset_positives"] == "4: 2, 8: 4, 12: 6, 14: 6, 20: 6"
    assert row["filled_with_negatives_from_n"] == 14
    drawn = [int(draw_subset(split, "hernia", task, n, seed=0, global_seed=1)[1]["positives"]) for n in sizes]
    assert drawn == [2, 4, 6, 6, 6]
    # without a shortfall the column is empty; sources and multilabel tasks have no such column
    plenty = jobs.table1(
        manifests={"hernia": tmp_path / "manifest.json"}, targets=["hernia"], tasks={"hernia": task},
        sizes=[4, 8], out_csv=tmp_path / "t1.csv",
    )  # fmt: skip
    assert plenty.iloc[0]["filled_with_negatives_from_n"] is None


# ---------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_point_estimates_are_the_headline_aucs_with_cis_around_them(study):
    table = load_summary()
    run_ci, reps = intervals.bootstrap(table, 300, 0.95, 2021)
    assert reps.shape == (len(table), 300)
    assert run_ci["auc"].to_numpy() == pytest.approx(table["headline_auc"].to_numpy(), abs=1e-9)
    assert (run_ci["lo"] <= run_ci["auc"] + 1e-9).all() and (run_ci["auc"] <= run_ci["hi"] + 1e-9).all()
    assert (run_ci["scores"] == "tta").all()
    # seeded: the same replicates again; another global seed: others
    assert np.array_equal(reps, intervals.bootstrap(table, 300, 0.95, 2021)[1])
    assert not np.array_equal(reps, intervals.bootstrap(table, 300, 0.95, 7)[1])
    plain, _ = intervals.bootstrap(table, 300, 0.95, 2021, metric="test_auc")
    assert (plain["scores"] == "plain").all()


def test_replicates_are_paired_across_runs_of_a_task(study, tmp_path):
    # a copy of a run under another recipe name has identical replicates: differences are exactly 0
    table = load_summary()
    src = table.loc[table["recipe"] == SCRATCH, "path"].iloc[0]
    dst = src.replace(SCRATCH, "onecycle-finetune-fractal-transfer")
    shutil.copytree(src, dst)
    m = json.loads((tmp_path / dst / "metrics.json").read_text())
    m.update(recipe="onecycle-finetune-fractal-transfer", source="fractal", init="transfer")
    (tmp_path / dst / "metrics.json").write_text(json.dumps(m))
    table = summary.read_metrics(sorted(Path(".").glob("results/runs/**/metrics.json")))
    _, reps = intervals.bootstrap(table, 200, 0.95, 1)
    i, j = (table.index[table["path"] == p][0] for p in (src, dst))
    assert np.array_equal(reps[i], reps[j])


def test_predictions_problems_are_named(study):
    row = load_summary().iloc[0].to_dict()
    preds = pd.read_parquet(f"{row['path']}/predictions.parquet").drop(columns=["p_Emphysema"])
    preds.to_parquet(f"{row['path']}/predictions.parquet")
    # TTA columns are there: the headline's scores still load; asking for plain ones names the column
    assert intervals.run_scores(row)["scores"] == "tta"
    with pytest.raises(InputError, match="missing column.*p_Emphysema"):
        intervals.run_scores(row, metric="test_auc")


def test_seed_means_intervals_come_from_the_replicates_over_test_images_with_two_seeds(study):
    table = load_summary()
    table = table[table["seed"] < 2].reset_index(drop=True)
    run_ci, reps = intervals.bootstrap(table, 200, 0.95, 1)
    means = intervals.seed_means(table, list(table["path"]), reps, 0.95)
    assert len(means) == 2 * 4 * 3 and (means["count"] == 2).all() and (means["band"] == "test").all()
    one = means.iloc[0]
    rows = table[(table["task"] == one["task"]) & (table["recipe"] == one["recipe"]) & (table["n"] == one["n"])]
    assert one["mean"] == pytest.approx(rows["headline_auc"].mean())
    # two seeds: the interval of their mean over the test images (the mean of their paired replicates)
    expected = stats.percentile_ci(reps[rows.index].mean(axis=0), 0.95)
    assert (one["ci_lo"], one["ci_hi"]) == pytest.approx(expected)
    assert means["ci_lo"].between(0, 1).all() and means["ci_hi"].between(0, 1).all()
    # one seed: that run's bootstrap CI
    single = table[table["seed"] == 0]
    first = intervals.seed_means(single, list(table["path"]), reps, 0.95).iloc[0]
    ci = run_ci[run_ci["path"] == single.iloc[0]["path"]].iloc[0]
    assert (first["ci_lo"], first["ci_hi"]) == pytest.approx((ci["lo"], ci["hi"]), abs=1e-6)
    with pytest.raises(InputError, match="bootstrap replicates lack run"):
        intervals.seed_means(table, list(table["path"])[1:], reps[1:], 0.95)


def test_seed_means_of_far_apart_seeds_stay_in_0_1(tmp_path, monkeypatch):
    """Two seeds with test AUCs of about 0.2 and 0.8: a Student-t interval over them is [-3.3, 4.3]; the
    interval here is over the test images (two seeds are too few to resample) and inside [0, 1]."""
    monkeypatch.chdir(tmp_path)
    paths = [write_run(Path("."), "emph", "resnet18", CXR13, 20, s, q=q, m=200) for s, q in ((0, -1.2), (1, 1.2))]
    table = summary.read_metrics(paths)
    assert table["headline_auc"].min() < 0.3 and table["headline_auc"].max() > 0.7
    _, reps = intervals.bootstrap(table, 300, 0.95, 1)
    row = intervals.seed_means(table, list(table["path"]), reps, 0.95).iloc[0]
    assert row["band"] == "test" and 0 <= row["ci_lo"] <= row["mean"] <= row["ci_hi"] <= 1


def test_seed_means_with_three_or_more_seeds_cover_the_seeds_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    qs = (0.2, 0.8, 1.4, 2.0)  # seeds that disagree
    paths = [write_run(Path("."), "emph", "resnet18", CXR13, 20, s, q=q, m=200) for s, q in enumerate(qs)]
    table = summary.read_metrics(paths)
    _, reps = intervals.bootstrap(table, 400, 0.95, 1)
    row = intervals.seed_means(table, list(table["path"]), reps, 0.95).iloc[0]
    test_only = stats.percentile_ci(reps.mean(axis=0), 0.95)
    assert row["band"] == "seeds+test" and row["count"] == 4
    assert 0 <= row["ci_lo"] < test_only[0] and test_only[1] < row["ci_hi"] <= 1


# -------------------------------------------------------------------------------------- comparisons


def test_pair_axis_names_what_a_comparison_is_about():
    u = lambda recipe, arch="resnet18", family="cnn": {"recipe": recipe, "arch": arch, "family": family}  # noqa: E731
    assert comparisons.pair_axis(u(CXR13), u(MURA)) == "source"
    assert comparisons.pair_axis(u(CXR13), u(SCRATCH)) == "source"
    assert comparisons.pair_axis(u(CXR13), u(REGULAR)) == "schedule"
    assert comparisons.pair_axis(u(CXR13), u("onecycle-gradual-cxr13-transfer")) == "transfer"
    assert comparisons.pair_axis(u(CXR13), u("onecycle-finetune-cxr13-moments")) == "init"
    assert comparisons.pair_axis(u(CXR13), u("regular-finetune-mura-transfer")) is None  # two axes
    assert comparisons.pair_axis(u(CXR13), u(CXR13, "densenet121")) == "arch"
    assert comparisons.pair_axis(u(CXR13), u("best", "radiomics_paper79", "radiomics")) == "family"


def test_paired_comparisons_find_the_better_recipe_and_not_a_copy(study, tmp_path):
    table = load_summary()
    run_ci, reps = intervals.bootstrap(table, 400, 0.95, 1)
    comp = comparisons.compare(table, list(table["path"]), reps, 0.95)
    assert set(comp["axis"]) == {"source", "schedule"}
    assert set(comp["n"].astype(str)) == {"20", "40", "80", "all"}
    better = comp[(comp["task"] == "emph") & (comp["recipe_a"] == CXR13) & (comp["recipe_b"] == SCRATCH)]
    overall = better[better["n"] == "all"].iloc[0]
    assert overall["diff"] > 0.1 and overall["diff_lo"] > 0 and overall["p"] < 0.05
    assert overall["runs"] == 9 and overall["seeds"] == 3 and overall["band"] == "seeds+test"
    assert (comp["p_holm"] >= comp["p"] - 1e-12).all() and (comp["p_method"] == "bootstrap").all()
    # the interval is the t over the 3 seeds' paired differences (averaged over sizes) + the shared test part
    a = table[(table["task"] == "emph") & (table["recipe"] == CXR13)].set_index(["n", "seed"])["headline_auc"]
    b = table[(table["task"] == "emph") & (table["recipe"] == SCRATCH)].set_index(["n", "seed"])["headline_auc"]
    per_seed = (a - b).groupby(level="seed").mean()
    assert overall["diff"] == pytest.approx(per_seed.mean())
    assert overall["se"] >= per_seed.std(ddof=1) / math.sqrt(3) - 1e-12
    delong = comparisons.compare(table, list(table["path"]), reps, 0.95, method="delong")
    same = (delong["task"] == "emph") & (delong["recipe_a"] == CXR13) & (delong["recipe_b"] == SCRATCH)
    row = delong[same & (delong["n"] == 80)].iloc[0]
    assert row["p_method"] == "delong" and row["diff"] == pytest.approx(better[better["n"] == 80].iloc[0]["diff"])
    assert (delong.loc[delong["task"] == "multi", "p_method"] == "bootstrap").all()  # DeLong: single-label only
    # two seeds: no p-value rests on them
    two = table[table["seed"] < 2].reset_index(drop=True)
    _, reps2 = intervals.bootstrap(two, 200, 0.95, 1)
    few = comparisons.compare(two, list(two["path"]), reps2, 0.95)
    assert (few["band"] == "test").all() and few["p"].isna().all()


def test_identical_predictions_compare_as_equal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = make_study(Path("."), [CXR13], sizes=(20, 40), tasks=("emph",))
    for p in list(paths):
        dst = Path(str(p.parent).replace("cxr13", "mura"))
        shutil.copytree(p.parent, dst)
        m = json.loads((dst / "metrics.json").read_text())
        m.update(recipe=MURA, source="mura")
        (dst / "metrics.json").write_text(json.dumps(m))
        paths.append(dst / "metrics.json")
    table = summary.read_metrics(paths)
    _, reps = intervals.bootstrap(table, 200, 0.95, 1)
    comp = comparisons.compare(table, list(table["path"]), reps, 0.95)
    assert (comp["diff"] == 0).all() and (comp["diff_lo"] == 0).all() and (comp["diff_hi"] == 0).all()


# ------------------------------------------------------------------------------------------- stages


def test_stage_table_from_a_stage_file_and_from_listed_groups(study, tmp_path):
    table = load_summary()
    _, reps = intervals.bootstrap(table, 300, 0.95, 1)
    stage = tmp_path / "results" / "stages" / "emph" / "resnet18" / "stage0.json"
    stage.parent.mkdir(parents=True)
    stage.write_text(json.dumps({"stage": 0, "axis": "source", "candidates": [SCRATCH, CXR13, MURA],
                                 "scores": {SCRATCH: 0.6, CXR13: 0.9, MURA: 0.8}, "winner": CXR13,
                                 "previous": None, "select_on": "val_auc_tta"}))  # fmt: skip
    specs = comparisons.stage_specs(table, [comparisons.read_stage(stage)], {}, "val_auc_tta")
    assert specs[0]["task"] == "emph" and specs[0]["arch"] == "resnet18"
    out = comparisons.stage_table(table, list(table["path"]), reps, specs, 0.95).iloc[0]
    assert out["stage"] == 1 and out["winner"] == CXR13 and out["runner_up"] == MURA
    assert out["val_margin_lo"] <= out["val_margin"] <= out["val_margin_hi"]
    assert out["test_margin_lo"] <= out["test_margin"] <= out["test_margin_hi"] and out["runs"] == 9
    assert out["seeds"] == 3 and out["band"] == "seeds+test"
    # the validation margin: a t-interval over the 3 seeds (each seed's mean over its sizes)
    va = table[(table["task"] == "emph") & (table["recipe"] == CXR13)].set_index(["n", "seed"])["select_auc"]
    vb = table[(table["task"] == "emph") & (table["recipe"] == MURA)].set_index(["n", "seed"])["select_auc"]
    d = (va - vb).groupby(level="seed").mean()
    half = stats.sps.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert (out["val_margin_lo"], out["val_margin_hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert out["test_margin"] == pytest.approx(out["test_winner"] - out["test_runner_up"])
    undefined = dict(specs[0], scores={SCRATCH: 0.6, CXR13: 0.9, MURA: None})  # MURA's AUCs were all undefined
    out = comparisons.stage_table(table, list(table["path"]), reps, [undefined], 0.95).iloc[0]
    assert out["runner_up"] == SCRATCH and out["runner_up_val"] == 0.6
    # without stage files: one per listed group differing in one axis, winner on validation
    config = {"study": {"targets": ["emph", "multi"], "archs": ["resnet18"], "recipes": [SCRATCH, CXR13, MURA, REGULAR],
                        "sizes": [20, 40, 80], "seeds": [0, 1], "stages": None}}  # fmt: skip
    plan = figures.plan(config)
    derived = comparisons.stage_specs(table, [], plan, "val_auc_tta")
    assert {(s["task"], s["axis"]) for s in derived} == {
        (t, a) for t in ("emph", "multi") for a in ("schedule", "source")
    }
    src = next(s for s in derived if s["axis"] == "source" and s["task"] == "emph")
    means = table[table["task"] == "emph"].groupby("recipe")["select_auc"].mean()
    assert src["winner"] == means[[SCRATCH, CXR13, MURA]].idxmax()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stage": 0}))
    with pytest.raises(InputError, match="bad.json: missing key"):
        comparisons.read_stage(bad)


def test_tta_fallback_and_stage_ties_follow_one_rule():
    assert tta_else_plain("test_auc_tta", lambda key: False) == "test_auc"
    assert tta_else_plain("val_auc_tta", lambda key: True) == "val_auc_tta"
    assert tta_else_plain("val_auc", lambda key: False) == "val_auc"
    # ties go to the earlier candidate; None and NaN scores cannot win
    assert best_candidate({"a": 0.7, "b": 0.7, "c": None, "d": math.nan}, ["b", "a", "c", "d"]) == "b"
    assert best_candidate({"c": None, "d": math.nan}, ["c", "d"]) is None


# ---------------------------------------------------------------------------------- learning curves


def test_learning_curves_per_recipe_with_the_size_needed(study):
    table = load_summary()
    curves = learning_curves(table, 0.8, "auto", 0.95, 40, 1)
    assert len(curves) == 2 * 4 and (curves["status"] == "ok").all() and (curves["model"] == "ipl3").all()
    ok = curves[np.isfinite(curves["n_target"])]
    assert (ok["n_target_lo"] <= ok["n_target"]).all() and (ok["n_target"] <= ok["n_target_hi"]).all()
    two = learning_curves(table[table["n"] < 80], 0.8, "auto", 0.95, 20, 1)
    assert (two["model"] == "ipl2").all()
    one = learning_curves(table[table["n"] == 20], 0.8, "auto", 0.95, 20, 1)
    assert (one["status"] == "fewer than 2 training sizes").all()
    assert learning_curves(table, 0.8, "auto", 0.95, 40, 1).equals(curves)  # seeded


# --------------------------------------------------------------------------------------- README.md

IMAGENET = "onecycle-finetune-imagenet-transfer"


def run_results(settings, plan=None, stats_jobs=True):
    """The results jobs after aggregate, chained as the rules chain them (``stats_jobs``: also bootstrap and
    compare, else only the learning curves and the README); returns results/README.md."""
    plan = plan or {}
    if stats_jobs:
        jobs.bootstrap(summary_parquet="results/summary.parquet", split_parquets=[], settings=settings,
                       select_on="val_auc_tta", global_seed=1, out_run_ci="results/run_ci.csv",
                       out_seed_means="results/seed_means.csv", out_replicates="results/b.npz")  # fmt: skip
        jobs.compare(summary_parquet="results/summary.parquet", replicates_npz="results/b.npz", stage_files=[],
                     figures=plan, settings=settings, select_on="val_auc_tta",
                     out_comparisons="results/c.csv", out_stages="results/stages.csv",
                     out_answer="results/answer.csv")  # fmt: skip
    jobs.learning_curves(summary_parquet="results/summary.parquet", replicates_npz="results/b.npz",
                         settings=settings, global_seed=1, out_csv="results/lc.csv")  # fmt: skip
    pd.DataFrame({"task": ["emph"], "role": ["target"], "label": ["Emphysema"], "train_positives": [10],
                  "val_positives": [2], "test_positives": [3]}).to_csv("results/t1.csv", index=False)  # fmt: skip
    jobs.results_readme(
        summary_parquet="results/summary.parquet",
        seed_means_csv="results/seed_means.csv",
        stages_csv="results/stages.csv",
        curves_csv="results/lc.csv",
        table1_csv="results/t1.csv",
        comparisons_csv="results/c.csv",
        answer_csv="results/answer.csv",
        figures={f: {"title": v["title"], "config": v["config"]} for f, v in plan.items()},
        settings=settings,
        out_readme="results/README.md",
        out_answer_html="results/answer.html",
    )
    return Path("results/README.md").read_text()


def small_study(recipes, q=None, val_boost=None, seeds=(0, 1, 2, 3), m_val=60):
    """One binary task, sizes 20/40/80, four seeds; ``q``: the same quality for every recipe and size;
    ``val_boost``: {recipe: added to its quality on the validation set only} (the selection, not the test)."""
    paths = []
    for recipe in recipes:
        shift = (val_boost or {}).get(recipe, 0.0)
        paths += make_study(Path("."), [recipe], tasks=("emph",), q=q, m=120, seeds=seeds, val_shift=shift, m_val=m_val)
    aggregate(paths, "results/summary.parquet", "results/summary.csv")


def section(text, title):
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_results_readme_opens_with_the_answer_then_stage_winners_headline_numbers_and_files(study):
    config = {"study": {"targets": ["emph", "multi"], "archs": ["resnet18"], "recipes": [SCRATCH, CXR13, MURA, REGULAR],
                        "sizes": [20, 40, 80], "seeds": [0, 1], "stages": None}}  # fmt: skip
    plan = figures.plan(config)
    text = run_results(SETTINGS, plan)
    stages = pd.read_csv("results/stages.csv")
    assert "## Stage winners" in text and f"`{stages.iloc[0]['winner']}`" in text
    assert text.index("## Answer") < text.index("## Stage winners")
    best = pd.read_csv("results/seed_means.csv").sort_values("mean").iloc[-1]
    assert f"{best['mean']:.3f} [" in text
    assert "figures/sources_resnet18.*" in text and "| emph | target | Emphysema | 10 | 2 | 3 |" in text
    assert "target test AUC 0.8" in text
    answer = section(text, "Answer")
    assert "### emph" in answer and "### multi" in answer and "**Use `" in answer
    assert "over training runs and test patients" in answer and "3 seeds per size" in answer
    # the report carries the same answer
    page = Path("results/answer.html").read_text()
    rec = pd.read_csv("results/answer.csv")
    chosen = rec[(rec["kind"] == "recommend") & rec["recommended"] & (rec["task"] == "emph")].iloc[0]
    assert f"<strong>Use <code>{chosen['recipe_b']}</code></strong>" in page and "<h3>multi</h3>" in page


def test_answer_picks_on_validation_and_recommends_a_cheaper_recipe_non_inferior_on_validation(tmp_path, monkeypatch):
    """Two recipes of the same quality, the pretrained-source one a hair better on validation (its winner):
    the ImageNet recipe is non-inferior on validation (worse by less than the margin, with confidence over
    4 seeds and the validation patients) and cheaper, so it is recommended; test only reports."""
    monkeypatch.chdir(tmp_path)
    small_study([CXR13, IMAGENET], q=1.0, val_boost={CXR13: 0.02}, m_val=5000)
    text = run_results(dict(SETTINGS, target_auc=None))
    rows = pd.read_csv("results/answer.csv")
    rec = rows[rows["kind"] == "recommend"].set_index("recipe_b")
    assert set(rec["recipe_a"]) == {CXR13}  # the validation winner
    other = rec.loc[IMAGENET]
    assert other["runs"] == 12 and other["seeds"] == 4 and other["val_band"] == "seeds+test"
    assert other["val_hi"] < 0.02 and other["p_ni_holm"] < 0.05 and other["not_worse"]
    assert rec["recommended"].to_dict() == {CXR13: False, IMAGENET: True}
    assert (rec.loc[IMAGENET, "cost_source_b"], rec.loc[CXR13, "cost_source_b"]) == (1, 2)
    answer = section(text, "Answer")
    assert f"**Use `{IMAGENET}`**" in answer and f"`{CXR13}` has the highest validation AUC" in answer
    assert f"The cheapest of them is `{IMAGENET}`" in answer and "(reported, not used to choose)" in answer
    # how AUC grows with n: the measured points, the fit within the sizes run, no size needed without a target
    means = pd.read_csv("results/seed_means.csv").set_index(["recipe", "n"])
    m = means.loc[(IMAGENET, 20)]
    assert f"n = 20: {m['mean']:.3f} [{m['ci_lo']:.3f}, {m['ci_hi']:.3f}]" in answer
    assert "fitted on n = 20–80" in answer and "set `results.target_auc`" in answer
    assert "## How much data is needed" not in text and "Training images needed" not in text
    # best per size: picked on validation, reported on test
    best = next(line for line in text.splitlines() if line.startswith("Best per size"))
    assert best.startswith("Best per size (picked on validation, test AUC shown)") and best.count(" vs ") == 3
    at_n = rows[rows["kind"] == "best_at_n"]
    assert sorted(at_n["n"].astype(int)) == [20, 40, 80]
    val_means = load_summary().groupby(["n", "recipe"])["select_auc"].mean()
    for r in at_n.to_dict("records"):
        assert r["recipe_a"] == val_means.loc[int(r["n"])].idxmax()  # the best on validation, not on test


def test_a_recipe_worse_on_validation_by_more_than_the_margin_is_not_recommended_and_disagreement_is_said(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    small_study([CXR13, SCRATCH])  # the source recipe is far better, on validation and on test
    answer = section(run_results(SETTINGS), "Answer")
    rec = pd.read_csv("results/answer.csv").query("kind == 'recommend'").set_index("recipe_b")
    assert not rec.loc[SCRATCH, "not_worse"] and rec.loc[SCRATCH, "val_lo"] > 0.02
    assert f"**Use `{CXR13}`**" in answer and "No other recipe is shown non-inferior" in answer
    # scratch boosted on validation only: it is picked (never the test winner), and the page says test disagrees
    shutil.rmtree("results/runs")
    small_study([CXR13, SCRATCH], val_boost={SCRATCH: 3.0})
    answer = section(run_results(SETTINGS), "Answer")
    assert f"**Use `{SCRATCH}`**" in answer and f"`{SCRATCH}` has the highest validation AUC" in answer
    assert f"Validation and test disagree: `{CXR13}` is better than `{SCRATCH}` on test" in answer


def test_with_two_seeds_the_answer_says_too_few_runs_and_keeps_the_validation_winner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small_study([CXR13, IMAGENET], q=1.0, val_boost={CXR13: 0.02}, m_val=5000, seeds=(0, 1))
    answer = section(run_results(dict(SETTINGS, target_auc=None)), "Answer")
    rec = pd.read_csv("results/answer.csv").query("kind == 'recommend'").set_index("recipe_b")
    assert rec.loc[IMAGENET, "val_band"] == "test" and not rec.loc[IMAGENET, "not_worse"]
    assert f"**Use `{CXR13}`**" in answer and "**Too few runs to compare**: 2 seeds" in answer
    best = next(line for line in Path("results/README.md").read_text().splitlines() if "Best per size" in line)
    assert best.count("(too few runs to test)") == 3


def test_target_auc_is_off_by_default_and_never_reports_a_size_below_the_smallest_run(study):
    assert cfg.load_schema()["properties"]["results"]["properties"]["target_auc"]["default"] is None
    text = run_results(dict(SETTINGS, target_auc=None))
    assert "## How much data is needed" not in text
    assert pd.read_csv("results/lc.csv")["n_target"].isna().all()
    # a target reached below the smallest size run: '≤ 20', never a size the study did not measure
    text = run_results(dict(SETTINGS, target_auc=0.51), stats_jobs=False)
    curves = pd.read_csv("results/lc.csv")
    assert (curves["n_target"] < 20).any() and (curves["min_n"] == 20).all()
    table = section(text, "How much data is needed")
    assert "| ≤ 20 | " in table and "| measured |" in table and "| 0 [" not in table
    assert "Training images needed for test AUC 0.51: ≤ 20; measured: the smallest size run" in section(text, "Answer")
    # a target beyond the largest size run: flagged as extrapolated
    text = run_results(dict(SETTINGS, target_auc=0.97), stats_jobs=False)
    assert "**extrapolated** beyond the largest size run (n = 80)" in section(text, "Answer")


def test_answer_reads_falling_curves_and_chance_honestly():
    """A tiny study's shape: one seed, AUC falling from n=20 to 40 (a fit that never reaches the target) yet
    above the target at n=20, and an interval at the largest size that includes 0.5."""
    rows = pd.DataFrame([{"kind": "recommend", "task": "emph", "n": "all", "family_a": "cnn", "arch_a": "r18",
                          "recipe_a": SCRATCH, "family_b": "cnn", "arch_b": "r18", "recipe_b": SCRATCH, "runs": 2,
                          "select_a": 0.9, "select_b": 0.9, "auc_a": 0.7, "auc_b": 0.7, "diff": 0.0,
                          "cost_source_b": 0, "cost_transfer_b": 1, "time_b": 2.0, "not_worse": True,
                          "recommended": True}])  # fmt: skip
    means = pd.DataFrame({"family": "cnn", "task": "emph", "arch": "r18", "recipe": SCRATCH, "n": [20, 40],
                          "mean": [0.85, 0.55], "ci_lo": [0.8, 0.45], "ci_hi": [0.9, 0.65], "count": 1,
                          "band": "test"})  # fmt: skip
    curves = pd.DataFrame([{"task": "emph", "arch": "r18", "recipe": SCRATCH, "status": "ok", "model": "ipl2",
                            "a": 1.0, "b": 0.0005, "c": -1.1, "rmse": 0.0, "min_n": 20, "max_n": 40,
                            "n_target": math.inf, "n_target_lo": math.nan, "n_target_hi": math.nan,
                            "n_reached": 20.0}])  # fmt: skip
    runs = pd.DataFrame({"family": "cnn", "task": "emph", "arch": "r18", "recipe": SCRATCH, "n": [20, 40],
                         "n_test": 50})  # fmt: skip
    text = "\n".join(answer.answer_section(runs, means, rows, curves, dict(SETTINGS, target_auc=0.8)))
    assert "n^1.1 (ipl2)" in text and "where it does not rise with n" in text
    assert "Training images needed for test AUC 0.8: ≤ 20; measured: the smallest size run (n = 20) reaches it" in text
    assert "Its interval at n = 40 includes 0.5" in text and "1 seed per size, 50 test images" in text
    assert "No other recipe to compare it with." in text
    # without a measured size reaching the target, the fit's 'never' says why
    text = "\n".join(
        answer.answer_section(runs, means, rows, curves.assign(n_reached=math.nan), dict(SETTINGS, target_auc=0.8))
    )
    assert "Training images needed for test AUC 0.8: never [–, –]; the fit does not rise with n" in text


def test_size_needed_prefers_a_measurement_and_flags_extrapolation():
    row = {"min_n": 20, "max_n": 80, "model": "ipl3", "a": 0.9, "b": 1.0, "c": 0.5, "n_target_lo": math.nan,
           "n_target_hi": math.nan}  # fmt: skip
    # measured at 40, the fit says 500: the measurement
    assert answer.needed(dict(row, n_target=500.0, n_reached=40.0)) == (
        "≤ 40",
        "measured: a size run (n = 40) reaches it",
    )
    # measured at 40, the fit says 31 (within the sizes run, consistent): the fit's finer reading
    assert answer.needed(dict(row, n_target=31.0, n_reached=40.0))[0].startswith("31 [")
    # not measured: beyond the largest size run, flagged; below the smallest, never shown below it
    cell, what = answer.needed(dict(row, n_target=500.0, n_target_lo=120.0, n_target_hi=2000.0, n_reached=math.nan))
    assert cell == "500 [120, 2,000]" and "**extrapolated** beyond the largest size run (n = 80)" in what
    assert answer.needed(dict(row, n_target=3.0, n_reached=math.nan))[0].startswith("≤ 20 [")
    assert "levels off below it (asymptote 0.900)" in answer.needed(dict(row, n_target=math.inf, n_reached=math.nan))[1]


def test_sizes_needed_are_shown_within_what_was_measured():
    assert answer.size_needed(0.4, 20, 80) == "≤ 20" and answer.size_needed(20.0, 20, 80) == "≤ 20"
    assert answer.size_needed(55.2, 20, 80) == "55" and answer.size_needed(300.0, 20, 80) == "300"
    assert answer.size_needed(math.inf, 20, 80) == "never" and answer.size_needed(9000.0, 20, 80) == "> 8,000"
    assert answer.size_needed(math.nan, 20, 80) == "–"


# ------------------------------------------------------------------------------------ the benchmark


def test_aggregation_benchmark_runs_and_reports_its_ratio(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "aggregate.py"), "--runs", "200", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "aggregate 200 runs" in proc.stdout and "ratio" in proc.stdout


def test_a_recipe_below_chance_is_warned_about_in_the_answer_the_readme_and_the_runs_end(tmp_path):
    """An interval over runs and patients entirely below 0.5 is warned about; one over the test patients
    only (two seeds) or one that reaches 0.5 is not (the runs' variation is unknown, or chance is in it)."""
    means = pd.DataFrame(
        [("cnn", "emph", "r18", SCRATCH, 50, 0.41, 0.37, 0.45, 5, "seeds+test"),
         ("cnn", "emph", "r18", SCRATCH, 100, 0.45, 0.38, 0.52, 5, "seeds+test"),
         ("cnn", "emph", "r18", CXR13, 50, 0.40, 0.35, 0.45, 2, "test")],
        columns=["family", "task", "arch", "recipe", "n", "mean", "ci_lo", "ci_hi", "count", "band"],
    )  # fmt: skip
    lines = answer.below_chance_lines(means)
    assert "**Warning: below chance.**" in lines[0] and len([x for x in lines if x.startswith("- ")]) == 1
    assert f"`{SCRATCH}` at n = 50: 0.410 [0.370, 0.450]" in lines[2]
    means.to_csv(tmp_path / "seed_means.csv", index=False)
    warned = answer.below_chance_warnings(str(tmp_path / "seed_means.csv"))
    assert warned == [f"WARNING: emph r18 {SCRATCH} n=50: test AUC 0.410 [0.370, 0.450] lies below chance (0.5); "
                      "see results/README.md"]  # fmt: skip
    assert answer.below_chance_warnings(str(tmp_path / "none.csv")) == []
    assert "below_chance_warnings" in (ROOT / "Snakefile").read_text()  # said where the run ends
    text = "\n".join(answer.answer_section(pd.DataFrame(), means, None, pd.DataFrame(), SETTINGS))
    assert "No CNN recipe was run" in text and "**Warning: below chance.**" in text  # warned without an answer too


def test_patient_ids_come_from_the_split_tables_and_a_bad_one_is_named(tmp_path):
    good = tmp_path / "split.parquet"
    pd.DataFrame({"image_id": ["a", "b"], "patient_id": ["P1", "P1"], "split": ["test", "test"]}).to_parquet(good)
    assert intervals.read_patients([good]) == {"a": "P1", "b": "P1"}
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    for path in (bad, tmp_path / "missing.parquet"):
        with pytest.raises(InputError) as info:
            intervals.read_patients([good, path])
        assert str(path) in str(info.value) and "\n" not in str(info.value)
