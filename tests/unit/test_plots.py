"""The figure plan (smalldl.figures, decided from the config at DAG time) and the figures (smalldl.plots, drawn
by the plotting jobs of smalldl.jobs.results)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smalldl import figures, plots
from smalldl.config import Recipe
from smalldl.errors import InputError
from smalldl.jobs import results as jobs
from smalldl.results import curves, intervals

from .results_fixtures import make_study, write_history, write_run

OPTIONS = {"style": "whitegrid", "context": "paper", "dpi": 60, "formats": ["png", "pdf"], "errorbar": "ci"}
SCRATCH = "onecycle-finetune-none-default"
CXR13 = "onecycle-finetune-cxr13-transfer"
MURA = "onecycle-finetune-mura-transfer"
STAGES = {
    "start": "onecycle-finetune-imagenet-transfer",
    "select_on": "val_auc_tta",
    "vary": [
        {"axis": "schedule", "values": ["onecycle", "regular"]},
        {"axis": "transfer", "values": ["extractor", "finetune", "gradual"]},
        {"axis": "source", "values": ["none", "imagenet", "cxr13"]},
        {"axis": "init", "values": ["transfer", "moments"]},
    ],
}


def config(recipes=(), stages=None, archs=("resnet18",), radiomics=None):
    c = {
        "seed": 1,
        "study": {"targets": ["emph", "multi"], "archs": list(archs), "recipes": list(recipes), "stages": stages,
                  "sizes": [20, 40, 80], "seeds": [0, 1]},
    }  # fmt: skip
    if radiomics:
        c["radiomics"] = {"featuresets": radiomics}
    return c


# --------------------------------------------------------------------------------------- the plan


def test_listed_recipes_ask_for_their_figures_and_the_demo_for_every_figure():
    plan = figures.plan(config([SCRATCH, CXR13, MURA]))
    assert list(plan) == ["auc_vs_n", "fig1_onecycle", "sources_resnet18", "learning_curves"]
    assert plan["sources_resnet18"]["recipes"] == [SCRATCH, CXR13, MURA] and plan["sources_resnet18"]["stage"] is None
    assert figures.figure_files(plan, ["png", "pdf"], "axis") == [
        "results/figures/sources_resnet18.png",
        "results/figures/sources_resnet18.pdf",
    ]
    # the real demo config
    import yaml

    from smalldl.config import validate

    demo = validate(yaml.safe_load((Path(__file__).parents[2] / "config.yaml").read_text()))
    archs = demo["study"]["archs"]
    radiomics = ["fig3_radiomics"] if demo.get("radiomics", {}).get("featuresets") else []
    # the paper's whole design: every figure (the source figure once per architecture: Figs 6 and 7 are
    # DenseNet121's and ResNet50's)
    assert list(figures.plan(demo)) == [
        "auc_vs_n",
        "fig1_onecycle",
        "fig2_gradual",
        *radiomics,
        "fig4_training",
        "fig5_transfer",
        *map(figures.source_figure_id, archs),
        "fig8_init",
        "learning_curves",
    ]


def test_stages_ask_for_every_axis_figure_from_the_stage_files():
    plan = figures.plan(config(stages=STAGES, archs=("densenet121", "resnet50")))
    assert list(plan) == [
        "auc_vs_n", "fig1_onecycle", "fig2_gradual", "fig4_training", "fig5_transfer", "fig6_sources_densenet121",
        "fig7_sources_resnet50", "fig8_init", "learning_curves",
    ]  # fmt: skip
    assert plan["fig5_transfer"]["stage"] == 1 and plan["fig5_transfer"]["archs"] == ["densenet121", "resnet50"]
    assert plan["fig7_sources_resnet50"]["stage_files"] == [
        "results/stages/emph/resnet50/stage2.json",
        "results/stages/multi/resnet50/stage2.json",
    ]
    assert "fig3_radiomics" in figures.plan(config([CXR13], radiomics=["paper79"]))
    assert "fig3_radiomics" not in figures.plan(config([CXR13], radiomics=[]))


def test_listed_recipes_give_the_largest_group_differing_in_one_axis():
    names = [SCRATCH, CXR13, MURA, "regular-finetune-cxr13-transfer", "regular-finetune-mura-transfer"]
    listed = [Recipe.parse(r) for r in [*names, "onecycle-finetune-cxr13-moments"]]
    assert figures.axis_group(listed, "source") == [SCRATCH, CXR13, MURA]
    assert figures.axis_group(listed, "schedule") == [CXR13, "regular-finetune-cxr13-transfer"]  # first of 2 ties
    assert figures.axis_group(listed, "transfer") == []
    assert figures.axis_group(listed, "init") == [SCRATCH, CXR13, "onecycle-finetune-cxr13-moments"]
    # scratch + one transfer init is no init comparison (the demo asks for no Fig 8)
    assert figures.axis_group([Recipe.parse(SCRATCH), Recipe.parse(CXR13)], "init") == []
    plan = figures.plan(config([r.name for r in listed]))
    assert {"fig4_training", "sources_resnet18", "fig8_init"} <= set(plan) and "fig5_transfer" not in plan


def test_the_plan_is_light_enough_for_dag_build_time():
    code = "import sys, smalldl.figures; assert 'pandas' not in sys.modules and 'torch' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


# ---------------------------------------------------------------------------------------- figures


@pytest.fixture
def tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = make_study(Path("."), [SCRATCH, CXR13, MURA, "onecycle-gradual-cxr13-transfer"], seeds=(0, 1))
    paths += [
        write_run(Path("."), t, "radiomics_paper79", "best", n, s, family="radiomics", tta=False, q=0.2 * n**0.3)
        for t in ("emph", "multi")
        for n in (20, 40, 80)
        for s in (0, 1)
    ]
    summary = jobs.aggregate(metrics=paths, out_parquet="summary.parquet", out_csv="summary.csv",
                             metric="test_auc_tta", select_on="val_auc_tta")  # fmt: skip
    _, reps = intervals.bootstrap(summary, 200, 0.95, 1)
    intervals.seed_means(summary, list(summary["path"]), reps, 0.95).to_csv("seed_means.csv", index=False)
    curves.learning_curves(summary, 0.8, "auto", 0.95, 20, 1).to_csv("curves.csv", index=False)
    return summary


def outputs(tmp_path, name):
    return [str(tmp_path / "fig" / f"{name}.{fmt}") for fmt in OPTIONS["formats"]]


def assert_written(paths):
    for p in paths:
        assert Path(p).stat().st_size > 1000, p
    assert not list(Path(paths[0]).parent.glob(".*.tmp"))


def test_every_figure_of_a_plan_is_drawn_in_every_format(tables, tmp_path):
    plan = figures.plan(config([SCRATCH, CXR13, MURA, "onecycle-gradual-cxr13-transfer"], radiomics=["paper79"]))
    assert {"fig2_gradual", "fig3_radiomics", "fig5_transfer", "sources_resnet18"} <= set(plan)
    for fig_id, spec in plan.items():
        out = outputs(tmp_path, fig_id)
        if spec["kind"] == "auc_vs_n":
            jobs.plot_auc_vs_n(seed_means_csv="seed_means.csv", title=spec["title"], options=OPTIONS, out_figures=out)
        elif spec["kind"] == "history":
            jobs.plot_history(summary_parquet="summary.parquet", spec=spec, targets=["emph", "multi"],
                              archs=["resnet18"], options=OPTIONS, out_figures=out)  # fmt: skip
        elif spec["kind"] in ("axis", "radiomics"):
            jobs.plot_axis(summary_parquet="summary.parquet", seed_means_csv="seed_means.csv", stage_files=[],
                           spec=spec, options=OPTIONS, out_figures=out)  # fmt: skip
        else:
            jobs.plot_learning_curves(curves_csv="curves.csv", seed_means_csv="seed_means.csv", target=0.8,
                                      options=OPTIONS, out_figures=out)  # fmt: skip
        assert_written(out)


def test_learning_curves_stay_within_the_sizes_run_unless_a_target_is_set(tables, tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "save", lambda fig, outputs, options: drawn.update(fig=fig))

    def lines(target):
        curves.learning_curves(tables, target, "auto", 0.95, 20, 1).to_csv("curves.csv", index=False)
        jobs.plot_learning_curves(curves_csv="curves.csv", seed_means_csv="seed_means.csv", target=target,
                                  options=OPTIONS, out_figures=outputs(tmp_path, "lc"))  # fmt: skip
        return [line for ax in drawn["fig"].axes for line in ax.get_lines()]

    # no target (the default): every fit within 20..80, no target line
    free = lines(None)
    assert free and max(max(line.get_xdata()) for line in free) <= 80
    assert not any(line.get_linestyle() == "--" for line in free) and "target" not in drawn["fig"]._suptitle.get_text()
    # a target beyond the sizes run: the fit extended to it, dotted (an extrapolation), the target dashed
    far = lines(0.97)
    dotted = [line for line in far if line.get_linestyle() == ":"]
    assert dotted and min(min(line.get_xdata()) for line in dotted) >= 80
    assert any(line.get_linestyle() == "--" for line in far)


def test_history_figures_use_a_real_run_chosen_deterministically(tables, tmp_path):
    run = plots.history_run(tables, {"schedule": "onecycle"}, ["multi", "emph"], ["resnet18"])
    assert (run["task"], run["recipe"], run["n"], run["seed"]) == ("multi", CXR13, 80, 0)
    gradual = plots.history_run(tables, {"transfer": "gradual"}, ["emph", "multi"], ["resnet18"])
    assert gradual["recipe"] == "onecycle-gradual-cxr13-transfer" and gradual["task"] == "emph"
    with pytest.raises(InputError, match="no run with schedule=regular"):
        plots.history_run(tables, {"schedule": "regular"}, ["emph"], ["resnet18"])
    steps = plots.read_history(Path(gradual["path"]) / "history.csv")
    assert plots.unfreeze_points(steps) == [(5, "unfreeze group 2"), (9, "unfreeze group 1")]
    (tmp_path / "h.csv").write_text("kind,epoch\nepoch,1\n")
    with pytest.raises(InputError, match="h.csv: needs the columns"):
        plots.read_history(tmp_path / "h.csv")
    # a run recorded before per-group lrs existed still draws (head lr only)
    write_history(tmp_path / "old.csv", Recipe.parse("onecycle-finetune-cxr13-transfer"))
    spec = figures.plan(config(["onecycle-gradual-cxr13-transfer"]))["fig2_gradual"]
    out = outputs(tmp_path, "old")
    plots.history_figure(spec, gradual, plots.read_history(tmp_path / "old.csv"), OPTIONS, out)
    assert_written(out)


def test_axis_panels_come_from_the_stage_files_or_the_listed_group(tables, tmp_path):
    spec = figures.plan(config(stages=STAGES))["sources_resnet18"]
    stage = {"stage": 2, "axis": "source", "candidates": [SCRATCH, CXR13], "winner": CXR13, "task": "emph",
             "arch": "resnet18"}  # fmt: skip
    panels = plots.axis_panels(spec, tables, {("emph", "resnet18"): stage})
    assert panels == {("emph", "resnet18"): [SCRATCH, CXR13]}
    listed = figures.plan(config([SCRATCH, CXR13, MURA]))["sources_resnet18"]
    assert plots.axis_panels(listed, tables, {}) == {(t, "resnet18"): [SCRATCH, CXR13, MURA] for t in ("emph", "multi")}
    path = tmp_path / "results" / "stages" / "emph" / "resnet18" / "stage2.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({k: v for k, v in stage.items() if k not in ("task", "arch")}))
    out = outputs(tmp_path, "stage_fig")
    jobs.plot_axis(summary_parquet="summary.parquet", seed_means_csv="seed_means.csv", stage_files=[path], spec=spec,
                   options=OPTIONS, out_figures=out)  # fmt: skip
    assert_written(out)


def test_radiomics_lines_are_the_best_models(tables):
    means = pd.read_csv("seed_means.csv")
    lines = plots.radiomics_lines(tables, means, "emph", ["resnet18"])
    assert [(f, a) for _, f, a, _ in lines] == [
        ("radiomics", "radiomics_paper79"),
        ("cnn", "resnet18"),
        ("cnn", "resnet18"),
    ]
    assert lines[1][3] == SCRATCH
    score = tables[(tables["task"] == "emph") & (tables["source"] != "none") & (tables["family"] == "cnn")]
    assert lines[2][3] == score.groupby("recipe")["select_auc"].mean().idxmax()


def test_bands():
    rows = pd.DataFrame({"mean": [0.8, 0.9], "ci_lo": [0.7, 0.85], "ci_hi": [0.9, 1.2], "sd": [0.05, 0.2],
                         "se": [0.01, 0.02], "pi_lo": [0.75, 0.8], "pi_hi": [0.85, 0.95]})  # fmt: skip
    lo, hi = plots.band(rows, "ci")
    assert np.allclose(lo, [0.7, 0.85]) and np.allclose(hi, [0.9, 1.0])  # clipped to [0, 1]
    lo, hi = plots.band(rows, "sd")
    assert np.allclose(lo, [0.75, 0.7]) and np.allclose(hi, [0.85, 1.0])
    assert np.allclose(plots.band(rows, "se")[0], [0.79, 0.88]) and np.allclose(plots.band(rows, "pi")[1], [0.85, 0.95])


def test_only_plotting_rules_read_plot_settings_and_every_figure_has_a_caption():
    import re

    text = (Path(__file__).parents[2] / "rules" / "results.smk").read_text()
    blocks = dict(re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, flags=re.M | re.S))
    plotting = {name for name in blocks if name.startswith("plot_")}
    assert plotting == {"plot_auc_vs_n", "plot_history", "plot_axis", "plot_learning_curves"}
    for name, body in blocks.items():
        assert ('config["plots"]' in body) == (name in plotting), name
        if name in plotting:
            caption = re.search(r'caption="\.\./(report/\w+\.rst)"', body) or re.search(
                r'figure_outputs\("\.\./(report/\w+\.rst)"\)', body
            )
            assert caption and (Path(__file__).parents[2] / caption.group(1)).is_file(), name
