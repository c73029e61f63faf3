"""The paper's claims tested on a study (smalldl.results.findings) and the source models' table
(smalldl.results.sources): each verdict comes out where the evidence says so, and a claim without runs is
'not run', never guessed."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smalldl import config as cfg
from smalldl import figures, stats
from smalldl.jobs import results as jobs
from smalldl.results import answer, comparisons, findings, readme, sources

from ..conftest import ROOT
from .results_fixtures import make_study, write_run

ARCH = "resnet18"
SCRATCH = "onecycle-finetune-none-default"
REGULAR = "regular-finetune-none-default"
IMAGENET = "onecycle-finetune-imagenet-transfer"
GRADUAL = "onecycle-gradual-imagenet-transfer"
EXTRACTOR = "onecycle-extractor-imagenet-transfer"
CXR13 = "onecycle-finetune-cxr13-transfer"
MURA = "onecycle-finetune-mura-transfer"
MOMENTS = "onecycle-finetune-imagenet-moments"
ANATOMY = {"cxr13": "same", "mura": "other", "imagenet": "natural"}
SETTINGS = {"ci": 0.95, "equivalence_margin": 0.02, "target_auc": None}
SUMMARY_COLUMNS = ["task", "family", "arch", "recipe", "n", "seed", "headline_auc", "select_auc", "path"]


def comp(a, b, diff, lo, hi, n="all", task="t", fam_b="cnn", arch_b=ARCH, seeds=5):
    """A row of comparisons.csv: a minus b, its interval over ``seeds`` seeds (a normal interval: se from
    the width; fewer than 3 seeds: band 'test')."""
    return {"task": task, "axis": "x", "n": n, "family_a": "cnn", "arch_a": ARCH, "recipe_a": a, "family_b": fam_b,
            "arch_b": arch_b, "recipe_b": b, "runs": 3 * seeds, "seeds": seeds, "diff": diff, "diff_lo": lo,
            "diff_hi": hi, "se": (hi - lo) / (2 * 1.959963984540054), "df": math.inf,
            "band": "seeds+test" if seeds >= 3 else "test"}  # fmt: skip


def empty_summary():
    return pd.DataFrame(columns=SUMMARY_COLUMNS)


def run_findings(comp_rows, summary=None, keys=(), reps=None, curves=None, settings=SETTINGS, targets=("t",)):
    return findings.findings(
        empty_summary() if summary is None else summary,
        pd.DataFrame(comp_rows),
        list(keys),
        np.zeros((0, 10)) if reps is None else reps,
        curves,
        {t: ANATOMY for t in targets},
        settings,
        list(targets),
        [ARCH],
    )


def only(table, claim, n="all"):
    rows = table[(table["claim"] == claim) & (table["n"] == n)]
    assert len(rows) == 1, (claim, rows)
    return rows.iloc[0]


# -------------------------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("relation", "lo", "hi", "expected"),
    [
        (">", 0.01, 0.05, "holds"),
        (">", 0.001, 0.002, "negligible"),  # real, but far below the margin
        (">", -0.05, -0.01, "contradicted"),
        (">", -0.01, 0.05, "inconclusive"),
        (">=", 0.01, 0.05, "holds"),
        (">=", -0.015, 0.01, "holds"),  # non-inferior: above -margin
        (">=", -0.005, 0.030, "holds"),
        (">=", -0.05, -0.001, "inconclusive"),  # worse, but maybe by less than the margin
        (">=", -0.06, -0.03, "contradicted"),  # worse by more than the margin
        (">=", -0.03, 0.01, "inconclusive"),
        ("≈", -0.015, 0.019, "holds"),
        ("≈", 0.025, 0.06, "contradicted"),
        ("≈", -0.08, -0.021, "contradicted"),
        ("≈", -0.01, 0.03, "inconclusive"),
        (">>", 0.03, 0.2, "holds"),
        (">>", 0.001, 0.015, "contradicted"),  # better, but not by more than the margin
        (">>", 0.01, 0.2, "inconclusive"),
        (">", math.nan, math.nan, "inconclusive"),
    ],
)
def test_verdict_follows_the_ci_the_relation_and_the_margin(relation, lo, hi, expected):
    assert findings.verdict(relation, lo, hi, 0.02) == expected
    # the same verdict from the tests' p-values (unadjusted), for the interval's normal reading
    if not math.isnan(lo):
        est, se = (lo + hi) / 2, (hi - lo) / (2 * 1.959963984540054)
        ci = stats.RunInterval(est, se, math.inf, lo, hi, 5, "seeds+test")
        p_h, p_c = findings.test_pvalues(relation, ci, 0.02)
        assert findings.decide(relation, est, p_h, p_c, 0.05 + 1e-9, 0.02) == expected


# -------------------------------------------------------------------------------- pairwise claims


def test_pairwise_claims_give_each_verdict_oriented_as_the_claim_and_not_run_without_runs():
    rows = [
        comp(SCRATCH, REGULAR, 0.03, 0.01, 0.05, n=20),
        comp(SCRATCH, REGULAR, 0.0, -0.04, 0.04, n=40),
        comp(SCRATCH, REGULAR, 0.025, 0.005, 0.045),
        # gradual minus fine-tune in the file: the claim reads fine-tune minus gradual
        comp(GRADUAL, IMAGENET, -0.04, -0.06, -0.03),
        comp(IMAGENET, EXTRACTOR, 0.003, 0.0015, 0.0045),  # real, but negligible
        comp(GRADUAL, EXTRACTOR, 0.05, 0.01, 0.09, seeds=2),  # two seeds: no verdict
        comp(CXR13, IMAGENET, 0.05, 0.02, 0.08),
        comp(MURA, IMAGENET, 0.002, -0.01, 0.015),
        comp(IMAGENET, SCRATCH, -0.05, -0.08, -0.02),
        comp(SCRATCH, IMAGENET, 0.1, 0.05, 0.15, task="other"),  # another target: not this one's evidence
    ]
    table = run_findings(rows)
    assert list(table.columns) == findings.COLUMNS
    schedule = table[table["claim"] == "schedule"]
    assert list(schedule["n"]) == ["20", "40", "all"] and list(schedule["verdict"]) == [
        "holds",
        "inconclusive",
        "holds",
    ]
    # the pooled rows are the confirmatory family (Holm over it); the per-size rows exploratory, unadjusted
    assert list(schedule["scope"]) == ["exploratory", "exploratory", "confirmatory"]
    assert schedule["p_holm"].iloc[:2].isna().all() and schedule["p_holm"].iloc[2] >= schedule["p"].iloc[2]
    fg = only(table, "finetune_vs_gradual")
    assert (fg["a"], fg["b"]) == (IMAGENET, GRADUAL)
    assert (fg["difference"], fg["ci_lo"], fg["ci_hi"]) == pytest.approx((0.04, 0.03, 0.06))
    assert fg["verdict"] == "contradicted"  # ≈ claimed, the CI lies beyond the margin
    assert only(table, "finetune_vs_extractor")["verdict"] == "negligible"
    assert only(table, "gradual_vs_extractor")["verdict"] == "too few runs"
    assert only(table, "same_vs_imagenet")["verdict"] == "holds"
    other = only(table, "imagenet_vs_other")
    assert (other["a"], other["b"], other["verdict"]) == (IMAGENET, MURA, "holds")
    assert other["ci_lo"] == pytest.approx(-0.015) and other["ci_hi"] == pytest.approx(0.01)
    assert only(table, "source_vs_none")["verdict"] == "contradicted"
    for claim in ("moments_vs_default", "transfer_vs_moments", "transfer_vs_training"):
        row = only(table, claim)
        assert row["verdict"] == "not run" and findings.CLAIM[claim].needs in row["note"], claim
    assert "fewer than two training sizes" in only(table, "gain_smallest_n")["note"]
    assert "radiomics" in only(table, "radiomics_vs_scratch")["note"]
    assert "n_needed" not in set(table["claim"])  # results.target_auc unset
    assert set(table["verdict"]) == set(findings.VERDICTS)


def test_holm_over_the_pooled_claims_turns_a_crowd_of_borderline_verdicts_inconclusive():
    """Each pooled row alone 'holds' at 95% (its CI excludes 0, p about 0.03), but eight of them are one
    family: Holm over it leaves none decided. One strong row still holds."""
    recipes = [f"onecycle-finetune-src{i}-transfer" for i in range(8)]
    rows = [comp(r, SCRATCH, 0.022, 0.002, 0.042) for r in recipes]
    anatomy = {f"src{i}": "natural" for i in range(8)}
    table = findings.findings(empty_summary(), pd.DataFrame(rows), [], np.zeros((0, 10)), None, {"t": anatomy},
                              SETTINGS, ["t"], [ARCH])  # fmt: skip
    pooled = table[table["claim"] == "source_vs_none"]
    assert len(pooled) == 8 and (pooled["ci_lo"] > 0).all()
    assert (pooled["verdict"] == "inconclusive").all() and (pooled["p_holm"] > 0.05).all()
    alone = [findings.verdict(">", r["ci_lo"], r["ci_hi"], 0.02, r["difference"]) for _, r in pooled.iterrows()]
    assert alone == ["holds"] * 8  # each alone, unadjusted
    strong = findings.findings(empty_summary(), pd.DataFrame([*rows, comp(IMAGENET, SCRATCH, 0.2, 0.15, 0.25)]), [],
                               np.zeros((0, 10)), None, {"t": {**anatomy, "imagenet": "natural"}}, SETTINGS, ["t"],
                               [ARCH])  # fmt: skip
    assert only(strong[strong["a"] == IMAGENET], "source_vs_none")["verdict"] == "holds"


def test_init_claims_and_anatomy_decide_which_pairs_count():
    rows = [
        comp(MOMENTS, SCRATCH, 0.005, -0.005, 0.015),
        comp("onecycle-gradual-imagenet-momentsconv", SCRATCH, 0.05, 0.03, 0.07),
        comp(IMAGENET, MOMENTS, 0.015, 0.005, 0.025),
        comp(CXR13, MURA, 0.05, 0.02, 0.08),  # same vs other: no claim of the paper
    ]
    table = run_findings(rows)
    md = table[(table["claim"] == "moments_vs_default") & (table["n"] == "all")].set_index("a")
    assert md.loc[MOMENTS, "verdict"] == "holds"
    assert md.loc["onecycle-gradual-imagenet-momentsconv", "verdict"] == "contradicted"
    assert only(table, "transfer_vs_moments")["verdict"] == "inconclusive"  # better, but maybe not by much
    assert only(table, "same_vs_imagenet")["verdict"] == "not run"
    # a source whose anatomy is unknown is named in the note
    unknown = findings.findings(
        empty_summary(), pd.DataFrame(rows), [], np.zeros((0, 10)), None, {"t": {"own": None}}, SETTINGS, ["t"], [ARCH]
    )
    assert "sources.<name>.anatomy of own" in only(unknown, "same_vs_imagenet")["note"]


def test_radiomics_claims_use_the_cnn_chosen_on_validation():
    summary = pd.DataFrame(
        [
            ("t", "cnn", ARCH, SCRATCH, 20, 0, 0.6, 0.70, "a"),
            ("t", "cnn", ARCH, REGULAR, 20, 0, 0.6, 0.60, "b"),
            ("t", "cnn", ARCH, IMAGENET, 20, 0, 0.8, 0.80, "c"),
            ("t", "cnn", ARCH, CXR13, 20, 0, 0.9, 0.85, "d"),
            ("t", "cnn", ARCH, MOMENTS, 20, 0, 0.5, 0.99, "m"),  # a source, but not its weights: not transfer
            ("t", "radiomics", "radiomics_paper79", "best", 20, 0, 0.7, 0.7, "e"),
        ],
        columns=SUMMARY_COLUMNS,
    )
    rad = {"fam_b": "radiomics", "arch_b": "radiomics_paper79"}
    rows = [
        comp(SCRATCH, "best", -0.1, -0.15, -0.05, n=20, **rad),
        comp(SCRATCH, "best", 0.01, -0.05, 0.07, n=80, **rad),
        comp(SCRATCH, "best", -0.05, -0.08, -0.01, **rad),
        comp(REGULAR, "best", 0.1, 0.05, 0.15, n=20, **rad),  # not the scratch recipe chosen on validation
        comp(CXR13, "best", 0.2, 0.1, 0.3, **rad),
        comp(IMAGENET, "best", -0.1, -0.2, -0.05, **rad),  # lower validation AUC than cxr13: not chosen
        comp(MOMENTS, "best", -0.2, -0.3, -0.1, **rad),
    ]
    table = run_findings(rows, summary=summary)
    scratch = table[table["claim"] == "radiomics_vs_scratch"]
    assert list(scratch["n"]) == ["20"]  # the smallest size only
    assert (scratch.iloc[0]["a"], scratch.iloc[0]["b"]) == ("radiomics_paper79/best", SCRATCH)
    assert scratch.iloc[0]["difference"] == pytest.approx(0.1) and scratch.iloc[0]["verdict"] == "holds"
    transfer = only(table, "transfer_vs_radiomics")
    assert (transfer["a"], transfer["verdict"]) == (CXR13, "holds")


# ---------------------------------------------------------------------------- from the replicates


def replicate_study(aucs, seeds=(0, 1, 2), iterations=400, noise=0.01):
    """A summary and paired replicates: ``aucs`` task -> recipe -> n -> AUC."""
    rng = np.random.default_rng(0)
    rows, reps = [], []
    for task, recipes in aucs.items():
        for recipe, by_n in recipes.items():
            for n, auc in by_n.items():
                for seed in seeds:
                    path = f"results/runs/{task}/{recipe}/n{n}/s{seed}"
                    rows.append((task, "cnn", ARCH, recipe, n, seed, auc, auc, path))
                    reps.append(auc + rng.normal(0, noise, iterations))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return summary, list(summary["path"]), np.asarray(reps, dtype=np.float32)


def test_transfer_effect_vs_training_effect_and_the_gain_at_the_smallest_n_from_replicates():
    def flat(v):
        return {20: v, 80: v}

    aucs = {
        # transfer methods differ by 0.15, schedules by 0.02; the source gains 0.2 at n=20, 0.05 at n=80
        "big_transfer": {
            IMAGENET: {20: 0.8, 80: 0.9}, GRADUAL: {20: 0.8, 80: 0.9}, EXTRACTOR: flat(0.7),
            SCRATCH: {20: 0.6, 80: 0.85}, REGULAR: {20: 0.58, 80: 0.83},
        },
        # transfer methods within 0.01, schedules 0.15 apart; the source gains more at n=80
        "big_schedule": {
            IMAGENET: {20: 0.7, 80: 0.9}, GRADUAL: {20: 0.7, 80: 0.9}, EXTRACTOR: {20: 0.69, 80: 0.89},
            SCRATCH: {20: 0.65, 80: 0.7}, REGULAR: {20: 0.5, 80: 0.55},
        },
    }  # fmt: skip
    summary, keys, reps = replicate_study(aucs)
    comp_table = comparisons.compare(summary, keys, reps, 0.95, loader=None)
    table = run_findings(comp_table, summary, keys, reps, targets=list(aucs))
    tt = table[(table["claim"] == "transfer_vs_training") & (table["n"] == "all")].set_index("task")
    assert tt.loc["big_transfer", "difference"] == pytest.approx(0.15 - 0.02, abs=1e-6)
    assert tt.loc["big_transfer", "verdict"] == "holds"
    assert tt.loc["big_schedule", "difference"] == pytest.approx(0.01 - 0.15, abs=1e-6)
    assert tt.loc["big_schedule", "verdict"] == "contradicted"
    assert set(table.loc[table["claim"] == "transfer_vs_training", "n"]) == {"20", "80", "all"}
    gain = table[(table["claim"] == "gain_smallest_n") & (table["a"] == IMAGENET)].set_index("task")
    assert gain.loc["big_transfer", "difference"] == pytest.approx(0.2 - 0.05, abs=1e-6)
    assert gain.loc["big_transfer", "verdict"] == "holds"
    assert gain.loc["big_schedule", "difference"] == pytest.approx(0.05 - 0.2, abs=1e-6)
    assert gain.loc["big_schedule", "verdict"] == "contradicted"
    lo, hi = gain.loc["big_transfer", ["ci_lo", "ci_hi"]]
    assert lo <= 0.15 + 1e-9 and 0.15 - 1e-9 <= hi and hi - lo < 0.1  # a CI around the difference
    # a run missing from the replicates is named
    with pytest.raises(Exception, match="rerun rule bootstrap"):
        run_findings(comp_table, summary, keys[1:], reps[1:], targets=list(aucs))


def test_n_needed_per_recipe_only_with_a_target_auc():
    curves = pd.DataFrame(
        [
            ("cnn", "t", ARCH, SCRATCH, 500.0, 200.0, 900.0, 80, "ok", 6, "seeds+test", 3),
            ("cnn", "t", ARCH, IMAGENET, 30.0, 20.0, 60.0, 80, "ok", 6, "seeds+test", 3),
            ("cnn", "t", ARCH, CXR13, 50.0, 20.0, math.inf, 80, "ok", 6, "seeds+test", 3),
            ("cnn", "t", ARCH, MURA, math.nan, math.nan, math.nan, 20, "fewer than 2 training sizes", 2, None, 2),
            ("cnn", "t", ARCH, REGULAR, 40.0, 20.0, 60.0, 80, "ok", 4, "test", 2),
        ],
        columns=[
            "family",
            "task",
            "arch",
            "recipe",
            "n_target",
            "n_target_lo",
            "n_target_hi",
            "max_n",
            "status",
            "runs",
            "band",
            "seeds",
        ],
    )
    table = run_findings([], curves=curves, settings={**SETTINGS, "target_auc": 0.8})
    needed = table[table["claim"] == "n_needed"].set_index("a")
    assert needed.loc[IMAGENET, "verdict"] == "holds" and needed.loc[IMAGENET, "difference"] == 30
    assert needed.loc[SCRATCH, "verdict"] == "contradicted"
    assert needed.loc[CXR13, "verdict"] == "inconclusive" and "never" in needed.loc[CXR13, "note"]
    assert needed.loc[REGULAR, "verdict"] == "too few runs"
    mura = table[(table["claim"] == "n_needed") & (table["verdict"] == "not run")]
    assert len(mura) == 1 and "fewer than 2 training sizes" in mura.iloc[0]["note"]
    text = "\n".join(readme.findings_section(table, {**SETTINGS, "target_auc": 0.8}))
    assert f"t ({ARCH}): `{IMAGENET}` (chosen on validation), n needed 30 [20, 60]" in text
    # the recipe is chosen on its validation curve, not on the test curve it then reports
    val = {("t", ARCH): {SCRATCH: 45.0, IMAGENET: 300.0, CXR13: 90.0}}
    text = "\n".join(readme.findings_section(table, {**SETTINGS, "target_auc": 0.8}, val))
    assert f"t ({ARCH}): `{SCRATCH}` (chosen on validation), n needed 500 [200, 900]" in text


# ------------------------------------------------------------------------------------- the config


def test_source_anatomy_from_the_dataset_kinds_or_the_config():
    config = cfg.load(ROOT / "configs" / "tiny.yaml")
    assert cfg.source_anatomies(config)["emphysema"] == {
        "cxr13": "same", "fractal": "natural", "imagenet": "natural", "mura": "other",
    }  # fmt: skip
    assert config["results"]["equivalence_margin"] == 0.02
    bad = copy.deepcopy(config)
    bad["sources"]["mura"]["anatomy"] = "chest"
    with pytest.raises(Exception, match="sources.mura.anatomy"):
        cfg.validate(bad)
    config = copy.deepcopy(config)
    config["sources"]["mura"]["anatomy"] = "same"
    config["datasets"]["own"] = {"kind": "folder", "params": {}}
    config["tasks"]["own"] = {**config["tasks"]["mura"], "dataset": "own"}
    config["sources"]["own"] = {"task": "own"}
    assert cfg.source_anatomy(config, "mura", "emphysema") == "same"
    assert cfg.source_anatomy(config, "own", "emphysema") is None  # a folder of unknown images
    assert cfg.source_anatomy(config, "own", "own") == "same"  # the same data
    assert "anatomy" not in cfg.source_settings(config, "mura")  # not a pretraining setting


# ------------------------------------------------------------------------------------ source models


def test_source_models_flag_a_source_whose_validation_auc_ci_reaches_chance():
    metas = [
        {"source": "cxr13", "arch": ARCH, "task": "cxr13", "recipe": GRADUAL, "chain": ["imagenet", "cxr13"],
         "val_auc": 0.81, "val_auc_se": 0.02, "n_val": 200},
        {"source": "mura", "arch": ARCH, "task": "mura", "recipe": "onecycle-finetune-fractal-transfer",
         "chain": ["fractal", "mura"], "val_auc": 0.55, "val_auc_se": 0.04, "n_val": 60},
        {"source": "old", "arch": ARCH, "task": "x", "recipe": SCRATCH, "chain": ["old"], "val_auc": 0.7},
        {"source": "imagenet", "arch": ARCH, "weights": "imagenet", "chain": ["imagenet"]},
    ]  # fmt: skip
    table = sources.source_table(metas, 0.95).set_index("source")
    assert table.loc["cxr13", "chain"] == "imagenet -> cxr13" and table.loc["cxr13", "flag"] == "learned"
    assert table.loc["cxr13", "ci_lo"] == pytest.approx(0.81 - 1.959964 * 0.02, abs=1e-6)
    assert table.loc["mura", "flag"] == "not learned" and table.loc["mura", "ci_lo"] < 0.5
    assert table.loc["old", "flag"] == "no CI"
    assert table.loc["imagenet", "flag"] == "published weights" and table.loc["imagenet", "kind"] == "published"
    text = "\n".join(readme.sources_section(table.reset_index(), {"ci": 0.95}))
    assert "| mura | resnet18 | fractal -> mura |" in text and "**not learned**" in text
    assert "0.810 [0.771, 0.849]" in text


def test_weights_from_a_file_are_of_unverified_provenance_in_the_table_and_the_answer():
    """sources.<name>.files: any checkpoint is taken as ImageNet weights; source_models.csv and the answer
    (README and answer.html) say that their provenance is unverified, for them and what was trained from them."""
    metas = [
        {"source": "imagenet", "arch": ARCH, "weights": "imagenet", "chain": ["imagenet"], "provenance": "published"},
        {"source": "mine", "arch": ARCH, "weights": "imagenet", "chain": ["mine"], "origin": "/x/w.pth",
         "provenance": "unverified weights file"},
        {"source": "cxr13", "arch": ARCH, "task": "cxr13", "recipe": GRADUAL, "chain": ["mine", "cxr13"],
         "val_auc": 0.8, "val_auc_se": 0.02, "provenance": "trained here from unverified weights file"},
        {"source": "old", "arch": ARCH, "task": "x", "recipe": SCRATCH, "chain": ["old"], "val_auc": 0.7},
    ]  # fmt: skip
    table = sources.source_table(metas, 0.95)
    assert table.set_index("source")["provenance"].to_dict() == {
        "cxr13": "trained here from unverified weights file",
        "imagenet": "published",
        "mine": "unverified weights file",
        "old": "trained here",  # metadata written before provenance was recorded
    }
    empty = pd.DataFrame()
    lines = answer.answer_section(empty, empty, None, empty, {"ci": 0.95}, table)
    (line,) = [line for line in lines if line.startswith("**Unverified weights**")]
    assert f"source models cxr13 ({ARCH}), mine ({ARCH}) start from a weights file" in line
    assert not [ln for ln in answer.answer_section(empty, empty, None, empty, {"ci": 0.95}, table.iloc[[1, 3]])
                if "Unverified" in ln]  # fmt: skip


def test_validation_auc_standard_error_for_binary_multilabel_and_multiclass():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(50), np.zeros(50)]
    perfect = stats.auc_bootstrap_se(y, y * 0.5 + 0.25, 200, np.random.default_rng(1))
    noisy = stats.auc_bootstrap_se(y, rng.random(100), 200, np.random.default_rng(1))
    assert perfect == 0 and 0.03 < noisy < 0.1  # ~ sqrt(AUC(1-AUC)/...) for 50 + 50 images
    multi = np.c_[y, 1 - y, np.full(100, -1)]  # a masked label counts in no AUC
    assert stats.auc_bootstrap_se(multi, rng.random((100, 3)), 200, np.random.default_rng(1)) > 0
    classes = np.repeat([0, 1, 2], 30)
    prob = rng.dirichlet(np.ones(3), 90)
    se = stats.auc_bootstrap_se(classes, prob, 200, np.random.default_rng(1), multiclass=True)
    assert 0.01 < se < 0.1
    assert math.isnan(stats.auc_bootstrap_se(np.ones(10), rng.random(10), 50, np.random.default_rng(1)))


# ----------------------------------------------------------------------------------------- the jobs


def test_findings_and_source_models_jobs_write_their_tables_and_the_readme_sections(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipes = [SCRATCH, REGULAR, IMAGENET, GRADUAL, EXTRACTOR, CXR13, MURA]
    seeds = (0, 1, 2, 3)
    paths = make_study(Path("."), recipes, sizes=(20, 40, 80), seeds=seeds, tasks=("emph",), m=200)
    paths += [write_run(Path("."), "emph", "radiomics_paper79", "best", n, seed, family="radiomics", q=0.6, m=200)
              for n in (20, 40, 80) for seed in seeds]  # fmt: skip
    s = {"metric": "test_auc_tta", "ci": 0.95, "bootstrap": 200, "comparison": "bootstrap", "target_auc": 0.8,
         "learning_curve": {"model": "auto", "bootstrap": 20}, "equivalence_margin": 0.02}  # fmt: skip
    jobs.aggregate(metrics=paths, out_parquet="r/summary.parquet", out_csv="r/summary.csv", metric=s["metric"],
                   select_on="val_auc_tta")  # fmt: skip
    jobs.bootstrap(summary_parquet="r/summary.parquet", split_parquets=[], settings=s, select_on="val_auc_tta",
                   global_seed=1, out_run_ci="r/run_ci.csv", out_seed_means="r/seed_means.csv",
                   out_replicates="r/b.npz")  # fmt: skip
    config = {"study": {"targets": ["emph"], "archs": [ARCH], "recipes": recipes, "sizes": [20, 40, 80],
                        "seeds": list(seeds), "stages": None}}  # fmt: skip
    plan = figures.plan(config)
    jobs.compare(summary_parquet="r/summary.parquet", replicates_npz="r/b.npz", stage_files=[], figures=plan,
                 settings=s, select_on="val_auc_tta", out_comparisons="r/c.csv",
                 out_stages="r/stages.csv", out_answer="r/answer.csv")  # fmt: skip
    jobs.learning_curves(summary_parquet="r/summary.parquet", replicates_npz="r/b.npz", settings=s, global_seed=1,
                         out_csv="r/lc.csv")  # fmt: skip
    jobs.findings(summary_parquet="r/summary.parquet", replicates_npz="r/b.npz", comparisons_csv="r/c.csv",
                  curves_csv="r/lc.csv", anatomy={"emph": ANATOMY}, targets=["emph"], archs=[ARCH], settings=s,
                  out_csv="r/findings.csv")  # fmt: skip
    table = pd.read_csv("r/findings.csv", dtype={"n": str})
    assert [c.id for c in findings.CLAIMS] == list(dict.fromkeys(table["claim"]))  # every claim, in order
    assert set(table["verdict"]) <= set(findings.VERDICTS)
    tested = table[table["verdict"] != "not run"]
    assert {
        "schedule", "finetune_vs_extractor", "same_vs_imagenet", "source_vs_none", "transfer_vs_training",
        "gain_smallest_n", "radiomics_vs_scratch", "transfer_vs_radiomics", "n_needed",
    } <= set(tested["claim"])  # fmt: skip
    assert set(table.loc[table["verdict"] == "not run", "claim"]) >= {"moments_vs_default", "transfer_vs_moments"}
    # the fixtures' sources: cxr13 far better than scratch, on 200 test images and 4 seeds (Holm over the family)
    assert only(table[table["a"] == CXR13], "source_vs_none")["verdict"] == "holds"
    for i, meta in enumerate(
        [
            {"source": "cxr13", "arch": ARCH, "task": "cxr13", "recipe": GRADUAL, "chain": ["imagenet", "cxr13"],
             "val_auc": 0.52, "val_auc_se": 0.03, "n_val": 80},
            {"source": "imagenet", "arch": ARCH, "weights": "imagenet", "chain": ["imagenet"]},
        ]
    ):  # fmt: skip
        Path(f"m{i}.json").write_text(json.dumps(meta))
    jobs.source_models(metas=["m0.json", "m1.json"], settings=s, out_csv="r/source_models.csv")
    pd.DataFrame({"task": ["emph"], "role": ["target"], "label": ["Emphysema"]}).to_csv("r/t1.csv", index=False)
    jobs.results_readme(summary_parquet="r/summary.parquet", seed_means_csv="r/seed_means.csv",
                        stages_csv="r/stages.csv", curves_csv="r/lc.csv", table1_csv="r/t1.csv",
                        comparisons_csv="r/c.csv", answer_csv="r/answer.csv", figures={}, settings=s,
                        out_readme="README.md", out_answer_html="answer.html", findings_csv="r/findings.csv",
                        sources_csv="r/source_models.csv")  # fmt: skip
    text = Path("README.md").read_text()
    assert text.index("## Answer") < text.index("## Findings") < text.index("## Stage winners")
    assert text.index("## Stage winners") < text.index("## Source models")
    assert "| one-cycle >= regular |" in text and "| transfer CNN > radiomics | emph | resnet18 |" in text
    assert "| cxr13 | resnet18 | imagenet -> cxr13 |" in text and "**not learned**" in text
    assert "| imagenet | resnet18 | imagenet |" in text and "published weights" in text
    with pytest.raises(Exception, match="m9.json"):
        jobs.source_models(metas=["m9.json"], settings=s, out_csv="r/x.csv")
    assert not Path("r/x.csv").exists()
