"""Configuration: schema validation with defaults, semantic checks, recipes and the study grid.

Imported by the Snakefile at DAG-build time, so it must stay light: no torch, no pandas.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from smalldl.errors import InputError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

#: Values of each recipe axis (PAPER.md): training method, transfer method, source, initialisation.
SCHEDULES = ("onecycle", "regular")
#: extractor = only the new head trains; finetune = all layers; gradual = discriminative lr + gradual unfreezing
TRANSFERS = ("extractor", "finetune", "gradual")
#: default = PyTorch's init; transfer = the source's weights; moments = every parameter tensor of the body
#: (BatchNorm weights and biases included) redrawn from the source tensor's mean and std (Raghu et al. 2019),
#: running stats kept from the source; momentsconv = the source's weights with only the conv weights
#: redrawn (smalldl/init.py).
INITS = ("default", "transfer", "moments", "momentsconv")
NO_SOURCE = "none"
#: The recipe axes, in the order of a recipe's name.
AXES = ("schedule", "transfer", "source", "init")
#: Radiomics feature sets and classifiers (smalldl/radiomics.py; the rules' wildcard values).
RADIOMICS_FEATURESETS = ("paper79", "pyradiomics")
RADIOMICS_MODELS = ("l1", "l2", "elasticnet", "rf")


@dataclass(frozen=True)
class Recipe:
    """How one model is trained: schedule x transfer method x source x init (``a-b-c-d``)."""

    schedule: str
    transfer: str
    source: str
    init: str

    @property
    def name(self) -> str:
        return f"{self.schedule}-{self.transfer}-{self.source}-{self.init}"

    @classmethod
    def parse(cls, name: str, sources: Mapping[str, Any] | None = None, where: str | None = None) -> Recipe:
        parts = name.split("-")
        where = f"{where or 'study.recipes'}: {name!r}"
        if len(parts) != 4:
            raise InputError(f"{where} must be schedule-transfer-source-init, e.g. onecycle-finetune-none-default")
        recipe = cls(*parts)
        _check_choice(where, "schedule", recipe.schedule, SCHEDULES)
        _check_choice(where, "transfer method", recipe.transfer, TRANSFERS)
        _check_choice(where, "init", recipe.init, INITS)
        if recipe.source == NO_SOURCE:
            if recipe.init != "default":
                raise InputError(f"{where}: source 'none' only goes with init 'default'")
            if recipe.transfer != "finetune":
                raise InputError(f"{where}: without a source there is nothing to freeze; use transfer 'finetune'")
        else:
            if sources is not None and recipe.source not in sources:
                known = ", ".join(sorted(sources)) or "none defined"
                raise InputError(f"{where}: source {recipe.source!r} is not under 'sources' ({known})")
            if recipe.init == "default":
                raise InputError(f"{where}: a source needs an init that uses it (e.g. 'transfer')")
        return recipe

    def replace(self, axis: str, value: str) -> Recipe:
        """This recipe with one axis changed, kept valid: a source with init 'default' gets 'transfer',
        source 'none' gets init 'default' and transfer 'finetune'."""
        parts = {a: getattr(self, a) for a in AXES}
        parts[axis] = value
        if parts["source"] == NO_SOURCE:
            parts["init"], parts["transfer"] = "default", "finetune"
        elif parts["init"] == "default":
            parts["init"] = "transfer"
        return Recipe(**parts)

    def with_set(self, values: Mapping[str, str]) -> Recipe:
        """This recipe with several axes set (a stage's ``set:``): the source first (it decides which
        transfer and init are valid), then the other axes in recipe order."""
        recipe = self
        for axis in sorted(values, key=lambda a: (a != "source", AXES.index(a))):
            recipe = recipe.replace(axis, values[axis])
        return recipe


#: How a source with a task is pretrained unless sources.<name>.recipe says otherwise: from scratch.
DEFAULT_SOURCE_RECIPE = "onecycle-finetune-none-default"


def _check_choice(where: str, axis: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{where}: unknown {axis} {value!r} (choose from {', '.join(allowed)})")


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _with_defaults(validator_class: type) -> type:
    """A validator that also fills in schema defaults (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _format_error(error: jsonschema.ValidationError) -> str:
    where = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        keys = ", ".join(f"{where}.{k}" if where != "<top level>" else k for k in extra)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown config key {keys}{hint}"
    return f"config key {where}: {error.message}"


def validate(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and check cross-references. Returns it.

    Raises InputError with a message naming the offending key.
    """
    schema = schema if schema is not None else load_schema()
    validator_cls = _with_defaults(jsonschema.validators.validator_for(schema))
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), _key_path(e)))
    if errors:
        raise InputError(_format_error(errors[0]))
    _check_references(config)
    return config


def _check_references(config: dict[str, Any]) -> None:
    datasets, tasks, sources = config["datasets"], config["tasks"], config.get("sources", {})
    for name in list(tasks) + list(sources) + list(datasets):
        if "-" in name or "/" in name:
            raise InputError(f"config key {name!r}: names may not contain '-' or '/'")
    for name, task in tasks.items():
        if task["dataset"] not in datasets:
            raise InputError(f"config key tasks.{name}.dataset: unknown dataset {task['dataset']!r}")
        if task["type"] == "binary" and len(task["labels"]) != 1:
            raise InputError(f"config key tasks.{name}.labels: a binary task has exactly one label column")
        if task["type"] == "multiclass" and len(task["labels"]) != 1:
            raise InputError(f"config key tasks.{name}.labels: a multiclass task has one (integer) label column")
        if task["val_fraction"] + task["test_fraction"] >= 1:
            raise InputError(f"config key tasks.{name}: val_fraction + test_fraction must be < 1")
        for other in task["exclude_patients_of"]:
            if other not in tasks or other == name:
                raise InputError(f"config key tasks.{name}.exclude_patients_of: unknown task {other!r}")
            if tasks[other]["dataset"] != task["dataset"]:
                raise InputError(f"config key tasks.{name}.exclude_patients_of: task {other!r} is on another dataset")
        if task.get("test_split") == "official":
            ds = datasets[task["dataset"]]
            if ds["kind"] not in ("nih", "chexpert", "mura", "folder") or (
                ds["kind"] == "folder" and not ds["params"].get("split_column")
            ):
                raise InputError(
                    f"config key tasks.{name}.test_split: dataset {task['dataset']!r} (kind {ds['kind']}) has no "
                    "official test set (nih, chexpert, mura have one; folder needs params.split_column)"
                )
    for name, source in sources.items():
        if name == NO_SOURCE:
            raise InputError(f"config key sources.{name}: 'none' is reserved for training from scratch")
        if ("task" in source) == ("weights" in source):
            raise InputError(f"config key sources.{name}: give either 'task' (pretrained here) or 'weights: imagenet'")
        if "task" in source and source["task"] not in tasks:
            raise InputError(f"config key sources.{name}.task: unknown task {source['task']!r}")
        if "weights" in source and "recipe" in source:
            raise InputError(f"config key sources.{name}.recipe: published weights are not trained here")
        if "task" in source:
            recipe = source.get("recipe") or DEFAULT_SOURCE_RECIPE
            Recipe.parse(recipe, sources, where=f"config key sources.{name}.recipe")
        for target in source.get("targets") or []:
            if target not in tasks:
                raise InputError(f"config key sources.{name}.targets: unknown task {target!r}")
    for name in sources:
        source_chain(config, name)  # a cycle is an error naming it
    study = config["study"]
    for target in study["targets"]:
        if target not in tasks:
            raise InputError(f"config key study.targets: unknown task {target!r}")
        if tasks[target]["type"] == "multiclass":
            raise InputError(f"config key study.targets: {target!r} is multiclass; targets are binary or multilabel")
    for recipe in study["recipes"]:
        Recipe.parse(recipe, sources)
    if not study["recipes"] and not study.get("stages"):
        raise InputError("config key study: give recipes, stages, or both")
    if study.get("stages"):
        stages = study["stages"]
        Recipe.parse(stages["start"], sources, where="config key study.stages.start")
        for k, stage in enumerate(stages["vary"]):
            for axis, value in (stage.get("set") or {}).items():
                if axis == stage["axis"]:
                    raise InputError(f"config key study.stages.vary[{k}].set.{axis}: the stage varies {axis} itself")
                if axis == "source" and value != NO_SOURCE and value not in sources:
                    raise InputError(f"config key study.stages.vary[{k}].set.source: unknown source {value!r}")
            if stage["axis"] == "source":
                for value in stage["values"]:
                    if value != NO_SOURCE and value not in sources:
                        raise InputError(f"config key study.stages.vary[{k}]: unknown source {value!r}")
        # every recipe a stage may compare is valid (stage_candidates parses each), for every winner the
        # stage before it may pick, and every stage has one for every target
        for target in study["targets"]:
            for k, candidates in enumerate(stage_reach(config, target)):
                if not candidates:
                    raise InputError(
                        f"config key study.stages.vary[{k}]: no candidate is left for target {target!r} "
                        "(its sources are restricted to other targets: sources.<name>.targets)"
                    )
    for arch in study["archs"]:
        if "-" in arch or "/" in arch:
            raise InputError(f"config key study.archs: {arch!r} may not contain '-' or '/'")
    crop = config["train"]["crop"]
    if crop > config["preprocess"]["width"]:
        raise InputError(f"config key train.crop: {crop} is larger than preprocess.width")


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML config file."""
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"config file {path} is not valid YAML: {exc}") from None
    return validate(config)


# ---------------------------------------------------------------------------------------------
# The study grid


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


def same_data(config: Mapping[str, Any], task_a: str, task_b: str) -> bool:
    """Whether two tasks are on the same images (the same dataset, or datasets of equal kind and params):
    only then can they share patients."""
    names = config["tasks"][task_a]["dataset"], config["tasks"][task_b]["dataset"]
    a, b = (config["datasets"][n] for n in names)
    return names[0] == names[1] or (a["kind"], a.get("params")) == (b["kind"], b.get("params"))


def leak_links(config: Mapping[str, Any], target: str, source: str) -> list[dict[str, Any]]:
    """The sources of ``source``'s chain pretrained here (they saw patients), oldest first, each
    {source, task, same_data}: what rule leak_check proves disjoint from ``target``'s validation and test
    patients. Empty for no source and for published weights (they saw no patient of ours)."""
    if source == NO_SOURCE:
        return []
    sources = config["sources"]
    return [
        {"source": s, "task": sources[s]["task"], "same_data": same_data(config, target, sources[s]["task"])}
        for s in source_chain(config, source)
        if "task" in sources[s]
    ]


def used_sources(config: Mapping[str, Any]) -> list[str]:
    """Sources that some run may need: listed recipes, every source a stage could choose, and the
    sources those are pretrained from."""
    names = {r.source for r in recipes(config)} | set(stage_values(config, "source"))
    names -= {NO_SOURCE}
    return sorted({s for name in names for s in source_chain(config, name)})


def pretrained_sources(config: Mapping[str, Any]) -> list[str]:
    """Used sources that are pretrained by the workflow (they have a task)."""
    return [s for s in used_sources(config) if "task" in config["sources"][s]]


def source_settings(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Pretraining settings for one source: ``pretrain`` with the source's own overrides."""
    settings = dict(config["pretrain"])
    own = ("task", "weights", "files", "recipe", "targets", "anatomy")
    settings.update({k: v for k, v in config["sources"][source].items() if k not in own})
    return settings


#: The anatomy of each dataset kind's images (a folder dataset's is unknown: sources.<name>.anatomy).
KIND_ANATOMY = {
    "nih": "chest",
    "chexpert": "chest",
    "synthetic_chest": "chest",
    "mura": "musculoskeletal",
    "synthetic_limb": "musculoskeletal",
    "fractal": "natural",
}


def source_anatomy(config: Mapping[str, Any], source: str, target: str) -> str | None:
    """How a source's images relate to a target's, for the findings (smalldl.results.findings): 'same'
    (same anatomy, e.g. ChestX-ray13 or CheXpert for a ChestX-ray14 target), 'other' (e.g. MURA), 'natural'
    (ImageNet and other natural images), or None (unknown). ``sources.<name>.anatomy`` decides when given;
    else published weights are natural, and a source task's dataset kind is compared with the target's
    (``KIND_ANATOMY``; two tasks on the same data are the same anatomy whatever their kind)."""
    spec = config["sources"][source]
    if spec.get("anatomy"):
        return spec["anatomy"]
    if "weights" in spec:
        return "natural"
    task = spec["task"]
    if same_data(config, task, target):
        return "same"
    kinds = (config["datasets"][config["tasks"][t]["dataset"]]["kind"] for t in (task, target))
    src, tgt = (KIND_ANATOMY.get(k) for k in kinds)
    if src == "natural":
        return "natural"
    if src is None or tgt is None:
        return None
    return "same" if src == tgt else "other"


def source_anatomies(config: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    """target -> used source -> ``source_anatomy``."""
    return {t: {s: source_anatomy(config, s, t) for s in used_sources(config)} for t in config["study"]["targets"]}


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
    names: list[str] = []
    where = f"config key study.stages.vary[{stage}]"
    for value in spec["values"]:
        recipe = base.replace(spec["axis"], value)
        Recipe.parse(recipe.name, config.get("sources"), where=where)
        if recipe.name not in names and source_allowed(config, recipe.source, target):
            names.append(recipe.name)
    return names


def tuning_size(config: Mapping[str, Any]) -> int:
    """The training size at which hyper-parameters (the lr finder) are tuned: the paper's 2000, i.e. the
    largest study size unless train.lr_finder.size says otherwise."""
    size = config["train"]["lr_finder"].get("size")
    return int(size) if size else max(config["study"]["sizes"])


def train_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Training settings (the schema's ``train_settings``) with defaults filled in and checked."""
    schema = load_schema()
    sub = {"$defs": schema["$defs"], **schema["$defs"]["train_settings"]}
    settings = copy.deepcopy(dict(overrides or {}))
    validator = _with_defaults(jsonschema.validators.validator_for(schema))(sub)
    errors = sorted(validator.iter_errors(settings), key=lambda e: _key_path(e))
    if errors:
        raise InputError(_format_error(errors[0]))
    return settings
