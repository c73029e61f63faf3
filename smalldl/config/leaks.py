"""The config's own leak refusal: what each (target, source chain) of the study saw (``leak_links``,
``gate_pairs``: the study gate's pairs) and the refusal of a source on the same data as a target
it is offered to without excluding the target's patients (``check_offered_leaks``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smalldl.config.datasets import same_data
from smalldl.config.grid import possible_stage_recipes, runs, source_chain
from smalldl.config.recipes import NO_SOURCE, Recipe
from smalldl.errors import InputError


def leak_links(config: Mapping[str, Any], target: str, source: str) -> list[dict[str, Any]]:
    """The sources of ``source``'s chain pretrained here (they saw patients), oldest first, each
    {source, task, same_data}: what the study gate proves disjoint from ``target``'s validation and test
    patients and images. Empty for no source and for published weights (they saw no patient of ours)."""
    if source == NO_SOURCE:
        return []
    sources = config["sources"]
    return [
        {"source": s, "task": sources[s]["task"], "same_data": same_data(config, target, sources[s]["task"])}
        for s in source_chain(config, source)
        if "task" in sources[s]
    ]


def offered_sources(config: Mapping[str, Any], target: str) -> dict[str, str]:
    """Every source some run of ``target`` may be fine-tuned from -> how it is offered ('study.recipes' or
    'study.stages'): the listed recipes and every candidate of every stage (any candidate may win)."""
    offered: dict[str, str] = {}
    for run in runs(config):
        if run["task"] == target:
            offered.setdefault(Recipe.parse(run["recipe"]).source, "study.recipes")
    for recipe in possible_stage_recipes(config, target):
        offered.setdefault(Recipe.parse(recipe).source, "study.stages")
    offered.pop(NO_SOURCE, None)
    return dict(sorted(offered.items()))


def gate_pairs(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every (target, source) of the study whose source chain holds a model pretrained here, with that
    chain (``leak_links``, each link also saying whether its task excludes the target's patients): what the
    study gate checks on the data before any training."""
    pairs = []
    for target in config["study"]["targets"]:
        for source in offered_sources(config, target):
            links = leak_links(config, target, source)
            for link in links:
                link["excludes_target"] = target in config["tasks"][link["task"]]["exclude_patients_of"]
            if links:
                pairs.append({"target": target, "source": source, "links": links})
    return pairs


def check_offered_leaks(config: Mapping[str, Any]) -> None:
    """Refuse, from the config alone, a study that offers a target a source (directly or through any link
    of its chain) pretrained on the same data without excluding the target's validation and test patients
    (``tasks.<source task>.exclude_patients_of``): the source model would have seen them."""
    tasks = config["tasks"]
    for pair in gate_pairs(config):
        target, source = pair["target"], pair["source"]
        how = offered_sources(config, target)[source]
        for link in pair["links"]:
            task = link["task"]
            if not link["same_data"] or target in tasks[task]["exclude_patients_of"]:
                continue
            via = "" if link["source"] == source else f" (source {source} is pretrained from it)"
            restrict = f"sources.{link['source']}.targets" + (
                "" if link["source"] == source else f" or sources.{source}.targets"
            )
            datasets = tasks[task]["dataset"], tasks[target]["dataset"]
            data = (
                f"dataset {datasets[0]}" if datasets[0] == datasets[1] else f"datasets {datasets[0]} and {datasets[1]}"
            )
            if task == target:
                fix = f"Fix: list only other targets in {restrict}"
            else:
                fix = f"Fix: add {target} to tasks.{task}.exclude_patients_of, or list only other targets in {restrict}"
            raise InputError(
                f"test leakage: source {link['source']}{via} is pretrained on task {task}, on the same data as "
                f"target {target} ({data}), and is offered to {target} through {how} without excluding "
                f"{target}'s validation and test patients. {fix}"
            )
