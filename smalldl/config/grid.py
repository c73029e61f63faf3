"""The study grid: the runs of the listed recipes, the candidates of each stage, source recipes and
chains, the tasks and sources a study uses, and each job's settings (result vs scheduling keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smalldl.config.recipes import DEFAULT_SOURCE_RECIPE, NO_SOURCE, Recipe
from smalldl.errors import InputError


def recipes(config: Mapping[str, Any]) -> list[Recipe]:
    """The explicitly listed recipes (stage-wise recipes are decided as the study runs)."""
    return [Recipe.parse(r, config.get("sources", {})) for r in config["study"]["recipes"]]


def stage_values(config: Mapping[str, Any], axis: str) -> list[str]:
    """Every value a stage may give ``axis``: the values of each recipe some stage may compare, for every
    target and every winner the stages before it may pick."""
    values: list[str] = []
    for recipe in possible_stage_recipes(config):
        value = getattr(Recipe.parse(recipe), axis)
        if value not in values:
            values.append(value)
    return values


def stage_reach(config: Mapping[str, Any], target: str) -> list[list[str]]:
    """Per stage, every recipe it may compare on ``target``: its candidates for every winner the stages
    before it may pick (any candidate may win). Empty list per stage after one with no candidate."""
    reach: list[list[str]] = []
    winners: list[str | None] = [None]
    for k in range(len(config["study"]["stages"]["vary"])):
        winners = list(dict.fromkeys(c for w in winners for c in stage_candidates(config, k, w, target)))
        reach.append(winners)
    return reach


def possible_stage_recipes(config: Mapping[str, Any], target: str | None = None) -> list[str]:
    """Every recipe some stage may compare (for ``target``, or any target)."""
    if not config["study"].get("stages"):
        return []
    tasks = [target] if target else config["study"]["targets"]
    return list(dict.fromkeys(r for task in tasks for stage in stage_reach(config, task) for r in stage))


def source_recipe(config: Mapping[str, Any], source: str) -> Recipe:
    """How a source with a task is pretrained (sources.<name>.recipe; default from scratch)."""
    spec = config["sources"][source]
    return Recipe.parse(spec.get("recipe") or DEFAULT_SOURCE_RECIPE)


def source_chain(config: Mapping[str, Any], source: str) -> list[str]:
    """The sources a source model descends from, oldest first, ending with ``source`` itself: e.g.
    ``[imagenet, chexpert, cxr13]`` for cxr13 pretrained from chexpert pretrained from ImageNet. A cycle is
    a config error naming it."""
    sources = config.get("sources", {})
    chain = [source]
    while "task" in sources.get(chain[0], {}):
        upstream = source_recipe(config, chain[0]).source
        if upstream == NO_SOURCE:
            break
        if upstream not in sources:
            raise InputError(f"config key sources.{chain[0]}.recipe: unknown source {upstream!r}")
        if upstream in chain:
            cycle = " -> ".join([*reversed(chain[: chain.index(upstream) + 1]), upstream])
            raise InputError(f"config key sources: the sources' recipes form a cycle: {cycle}")
        chain.insert(0, upstream)
    return chain


def source_allowed(config: Mapping[str, Any], source: str, target: str) -> bool:
    """Whether ``target`` may be fine-tuned from ``source``: every source of its chain allows it
    (sources.<name>.targets; absent = every target)."""
    if source == NO_SOURCE:
        return True
    sources = config.get("sources", {})
    return all(target in (sources.get(s, {}).get("targets") or [target]) for s in source_chain(config, source))


def used_sources(config: Mapping[str, Any]) -> list[str]:
    """Sources that some run may need: listed recipes, every source a stage could choose, and the
    sources those are pretrained from."""
    names = {r.source for r in recipes(config)} | set(stage_values(config, "source"))
    names -= {NO_SOURCE}
    return sorted({s for name in names for s in source_chain(config, name)})


def pretrained_sources(config: Mapping[str, Any]) -> list[str]:
    """Used sources that are pretrained by the workflow (they have a task)."""
    return [s for s in used_sources(config) if "task" in config["sources"][s]]


#: Keys of train / pretrain (and a source's overrides) that say where and how a training job runs, never
#: what it computes: threads, memory, time, GPUs, the device, the evaluation batch (predictions equal up to
#: float rounding), the resume checkpoint. Rules pass them as ``threads`` / ``resources`` (which Snakemake
#: does not compare), never as ``params``, so changing one reruns nothing (``result_settings``).
SCHEDULING_KEYS = ("threads", "mem_mb", "runtime", "gpu", "jobs_per_gpu", "device", "eval_batch_size", "checkpoint")


def result_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` less ``SCHEDULING_KEYS``: what a training rule passes as ``params`` (and what a run's
    resume signature holds)."""
    return {k: v for k, v in settings.items() if k not in SCHEDULING_KEYS}


def job_resources(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The scheduling keys a training job reads, as Snakemake resources (numbers or a plain string):
    ``eval_batch_size`` null -> 0, ``checkpoint`` -> 0/1 (``smalldl.workflow.job_settings`` undoes it)."""
    return {
        "jobs_per_gpu": int(settings["jobs_per_gpu"]),
        "device": str(settings["device"]),
        "eval_batch_size": int(settings.get("eval_batch_size") or 0),
        "checkpoint": int(bool(settings["checkpoint"])),
    }


def source_settings(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Pretraining settings for one source: ``pretrain`` with the source's own overrides."""
    settings = dict(config["pretrain"])
    own = ("task", "weights", "files", "recipe", "targets", "anatomy")
    settings.update({k: v for k, v in config["sources"][source].items() if k not in own})
    return settings


def used_tasks(config: Mapping[str, Any]) -> list[str]:
    """Every task the study needs: targets, source tasks, and tasks they exclude patients of."""
    tasks = config["tasks"]
    wanted = list(config["study"]["targets"]) + [config["sources"][s]["task"] for s in pretrained_sources(config)]
    seen: list[str] = []
    while wanted:
        name = wanted.pop(0)
        if name not in seen:
            seen.append(name)
            wanted.extend(tasks[name]["exclude_patients_of"])
    return seen


def runs(config: Mapping[str, Any], recipe_names: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per fine-tuning job of the listed recipes (default: study.recipes): task, arch, recipe, n,
    seed. A recipe whose source does not allow a target (sources.<name>.targets) is not run on it."""
    study = config["study"]
    names = study["recipes"] if recipe_names is None else recipe_names
    return [
        {"task": t, "arch": a, "recipe": r, "n": n, "seed": s}
        for t in study["targets"]
        for a in study["archs"]
        for r in names
        if source_allowed(config, Recipe.parse(r).source, t)
        for n in study["sizes"]
        for s in study["seeds"]
    ]


def stage_candidates(config: Mapping[str, Any], stage: int, winner: str | None, target: str) -> list[str]:
    """Recipes that stage ``stage`` (0-based) compares on ``target``: ``winner`` of the previous stage (or
    the start recipe), with the stage's ``set:`` axes applied, then its axis set to each of its values;
    duplicates and sources that do not allow the target dropped, order kept."""
    stages = config["study"]["stages"]
    spec = stages["vary"][stage]
    base = Recipe.parse(winner or stages["start"]).with_set(spec.get("set") or {})
    base = base.with_epochs(stage_epochs(config, stage))
    names: list[str] = []
    where = f"config key study.stages.vary[{stage}]"
    for value in spec["values"]:
        recipe = base.replace(spec["axis"], value)
        Recipe.parse(recipe.name, config.get("sources"), where=where)
        if recipe.name not in names and source_allowed(config, recipe.source, target):
            names.append(recipe.name)
    return names


def stage_epochs(config: Mapping[str, Any], stage: int) -> int | None:
    """The epochs of stage ``stage``'s candidates when they differ from ``train.epochs`` (its ``epochs``),
    else None. Each stage trains all its candidates, the previous winner included, for its own epochs, as
    the authors' per-stage scripts did; a recipe trained for other epochs is another run (its name ends in
    ``-e<N>``), so two stages that share a recipe at different epochs train it twice, never one for both."""
    epochs = config["study"]["stages"]["vary"][stage].get("epochs")
    return None if epochs is None or epochs == config["train"]["epochs"] else int(epochs)


def recipe_settings(config: Mapping[str, Any], recipe_name: str) -> Mapping[str, Any]:
    """The training settings of one recipe's runs: ``train`` itself, or a copy with the recipe's epochs
    if it names them (``-e<N>``)."""
    epochs = Recipe.parse(recipe_name).epochs
    return config["train"] if epochs is None else {**config["train"], "epochs": epochs}


def tuning_size(config: Mapping[str, Any]) -> int:
    """The training size at which hyper-parameters (the lr finder) are tuned: the paper's 2000, i.e. the
    largest study size unless train.lr_finder.size says otherwise."""
    size = config["train"]["lr_finder"].get("size")
    return int(size) if size else max(config["study"]["sizes"])
