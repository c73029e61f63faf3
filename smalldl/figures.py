"""Which figures a configuration asks for, decided from the config alone (at DAG-build time).

Imported by rules/common.smk, so it stays light: standard library and smalldl.config only (no pandas).

A figure is a plain dict (it travels to the plotting job as a Snakemake param):

- ``auc_vs_n``       every run: mean test AUC vs training size per recipe (always)
- ``learning_curves`` fitted AUC(n) curves and the size needed for the target AUC (always)
- ``fig1_onecycle``  lr and momentum over the iterations of a one-cycle run (if a one-cycle run is possible)
- ``fig2_gradual``   the three layer groups' lrs with the unfreeze points (if a gradual run is possible)
- ``fig3_radiomics`` CNNs vs the radiomics baseline (if ``radiomics.featuresets`` is configured)
- ``fig4_training`` / ``fig5_transfer`` / ``fig8_init``: recipes differing only in schedule / transfer / init
- ``fig6_sources_densenet121``, ``fig7_sources_resnet50``, ``sources_<arch>`` (other archs): sources,
  one figure per architecture

An axis figure shows the candidates of the stage that varies its axis (read from the stage files at plot
time) when stages are configured, otherwise the largest group of listed recipes that differ only in that
axis (at least two).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from smalldl.config import AXES, NO_SOURCE, Recipe, stage_values

#: Paper figure per axis (sources: per architecture, see ``source_figure_id``).
AXIS_FIGURES = {"schedule": "fig4_training", "transfer": "fig5_transfer", "init": "fig8_init"}
AXIS_TITLES = {
    "schedule": "Training methods",
    "transfer": "Transfer-learning methods",
    "source": "Source datasets",
    "init": "Initialisations",
}
PAPER_SOURCE_FIGURES = {"densenet121": "fig6", "resnet50": "fig7"}
STAGE_PATH = "results/stages/{task}/{arch}/stage{k}.json"
FIGURE_PATH = "results/figures/{figure}.{fmt}"


def source_figure_id(arch: str) -> str:
    prefix = PAPER_SOURCE_FIGURES.get(arch)
    return f"{prefix}_sources_{arch}" if prefix else f"sources_{arch}"


def axis_matches(axis: str, a: Recipe, b: Recipe) -> bool:
    """Whether recipes ``a`` and ``b`` differ at most in ``axis`` (and are trained for the same epochs).

    Source 'none' implies transfer 'finetune' and init 'default', so on the source axis a scratch recipe
    matches any transfer and init of the same schedule; on the init axis a scratch recipe is the
    'default' initialisation of any source with the same schedule."""
    if a.epochs != b.epochs:
        return False  # trained for other epochs: not a comparison of the axis alone
    others = [x for x in AXES if x != axis]
    if axis == "source" and NO_SOURCE in (a.source, b.source):
        others = ["schedule"]
    if axis == "init" and NO_SOURCE in (a.source, b.source):
        others = ["schedule"]
    return all(getattr(a, x) == getattr(b, x) for x in others)


def axis_value(axis: str, recipe: Recipe) -> str:
    return getattr(recipe, axis)


def axis_group(recipes: Sequence[Recipe], axis: str) -> list[str]:
    """The largest group of recipes that differ only in ``axis`` and hold >= 2 different values of it
    (ties: the group whose first member is listed first); [] if there is none."""
    best: list[Recipe] = []
    for anchor in recipes:
        if axis in ("source", "init") and anchor.source == NO_SOURCE:
            continue  # scratch joins the groups of sourced anchors, it does not anchor one
        group = [r for r in recipes if r == anchor or axis_matches(axis, anchor, r)]
        # the group must be consistent pairwise (two scratch-matching members could differ elsewhere)
        group = [r for r in group if all(axis_matches(axis, r, o) for o in group if o.source != NO_SOURCE)]
        # on the init axis the scratch 'default' is a reference line, not one of the compared inits
        compared = [r for r in group if not (axis == "init" and r.source == NO_SOURCE)]
        if len({axis_value(axis, r) for r in compared}) >= 2 and len(group) > len(best):
            best = group
    return [r.name for r in best]


def stage_for_axis(config: Mapping[str, Any], axis: str) -> int | None:
    """Index of the first configured stage that varies ``axis`` (None without one)."""
    stages = config["study"].get("stages")
    if not stages:
        return None
    for k, stage in enumerate(stages["vary"]):
        if stage["axis"] == axis:
            return k
    return None


def stage_paths(config: Mapping[str, Any], k: int, archs: Sequence[str]) -> list[str]:
    return [STAGE_PATH.format(task=t, arch=a, k=k) for t in config["study"]["targets"] for a in archs]


def _possible(config: Mapping[str, Any], axis: str, value: str) -> bool:
    """Whether some run of the study will have ``axis == value``: a listed recipe, the stages' start or one
    of their candidates."""
    listed = [Recipe.parse(r) for r in config["study"]["recipes"]]
    return any(getattr(r, axis) == value for r in listed) or value in stage_values(config, axis)


def _config_line(config: Mapping[str, Any]) -> str:
    study = config["study"]
    return (
        f"targets {', '.join(study['targets'])}; archs {', '.join(study['archs'])}; "
        f"sizes {', '.join(map(str, study['sizes']))}; seeds {', '.join(map(str, study['seeds']))}"
    )


def plan(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Figure id -> spec for every figure the config asks for (ordered as in the paper)."""
    study = config["study"]
    archs = list(study["archs"])
    listed = [Recipe.parse(r) for r in study["recipes"]]
    figures: dict[str, dict[str, Any]] = {}

    def add(fig_id: str, kind: str, title: str, caption: str, **extra: Any) -> None:
        figures[fig_id] = {"id": fig_id, "kind": kind, "title": title, "caption": caption, **extra}

    add(
        "auc_vs_n",
        "auc_vs_n",
        "Test AUC vs training size",
        "Test AUC against the number of training images for every architecture and recipe of the study, "
        "one panel per task; lines are means over seeds, bands their confidence interval.",
    )
    if _possible(config, "schedule", "onecycle"):
        add(
            "fig1_onecycle",
            "history",
            "One-cycle schedule of a real run",
            "Learning rate and momentum at every optimizer step of one recorded one-cycle run "
            "(its history.csv; the first target and architecture, the largest size, the first seed).",
            select={"schedule": "onecycle"},
        )
    if _possible(config, "transfer", "gradual"):
        add(
            "fig2_gradual",
            "history",
            "Discriminative learning rates and gradual unfreezing",
            "Learning rate of the three layer groups at every optimizer step of one recorded run with "
            "gradual unfreezing (its history.csv); solid while a group trains, dotted while it is frozen; "
            "vertical lines mark the steps at which groups are unfrozen.",
            select={"transfer": "gradual"},
        )
    if (config.get("radiomics") or {}).get("featuresets"):
        add(
            "fig3_radiomics",
            "radiomics",
            "Deep learning vs radiomics",
            "Test AUC against training size of the radiomics baseline (per feature set, the best model) "
            "and, per architecture, the best CNN trained from scratch and the best CNN with a source "
            "(best on validation AUC), one panel per task; means over seeds with confidence bands.",
            archs=archs,
        )
    for axis in ("schedule", "transfer", "source", "init"):
        groups = [[a] for a in archs] if axis == "source" else [archs]
        for fig_archs in groups:
            fig_id = source_figure_id(fig_archs[0]) if axis == "source" else AXIS_FIGURES[axis]
            k = stage_for_axis(config, axis)
            title = AXIS_TITLES[axis] + (f" ({fig_archs[0]})" if axis == "source" else "")
            what = (
                f"Test AUC against training size for the recipes that differ only in the {axis}, one panel "
                "per task" + (" and architecture" if len(fig_archs) > 1 else "") + "; means over seeds with "
                "confidence bands."
            )
            if k is not None:
                add(
                    fig_id,
                    "axis",
                    title,
                    what + f" The recipes are the candidates of stage {k + 1} of the stage-wise study.",
                    axis=axis,
                    archs=fig_archs,
                    stage=k,
                    recipes=[],
                    stage_files=stage_paths(config, k, fig_archs),
                )
                continue
            group = axis_group(listed, axis)
            if group:
                add(
                    fig_id,
                    "axis",
                    title,
                    what + " The recipes are those listed in study.recipes: " + ", ".join(group) + ".",
                    axis=axis,
                    archs=fig_archs,
                    stage=None,
                    recipes=group,
                    stage_files=[],
                )
    add(
        "learning_curves",
        "learning_curves",
        "Learning curves",
        "Inverse power-law fits of test AUC against training size per task, architecture and recipe "
        "(points: means over seeds), with the target AUC and the size at which each fit reaches it.",
    )
    line = _config_line(config)
    for spec in figures.values():
        spec["config"] = line
    return figures


def figure_files(figures: Mapping[str, Mapping[str, Any]], formats: Sequence[str], kind: str | None = None) -> list:
    """results/figures/{id}.{fmt} of every planned figure (of one kind)."""
    return [
        FIGURE_PATH.format(figure=fig_id, fmt=fmt)
        for fig_id, spec in figures.items()
        if kind is None or spec["kind"] == kind
        for fmt in formats
    ]
