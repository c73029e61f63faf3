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
#: default = PyTorch's init; transfer = the source's weights; moments = every weight tensor redrawn from
#: the source tensor's mean and std (Raghu et al. 2019); momentsconv = only conv weights redrawn, the rest
#: PyTorch's default. Both moment-preserving variants set BatchNorm to identity.
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
    def parse(cls, name: str, sources: Mapping[str, Any] | None = None) -> Recipe:
        parts = name.split("-")
        where = f"study.recipes: {name!r}"
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
        Recipe.parse(stages["start"], sources)
        for k, stage in enumerate(stages["vary"]):
            for value in stage["values"]:
                Recipe.parse(Recipe.parse(stages["start"]).replace(stage["axis"], value).name, sources)
                if stage["axis"] == "source" and value != NO_SOURCE and value not in sources:
                    raise InputError(f"config key study.stages.vary[{k}]: unknown source {value!r}")
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
    """Every value a stage may give ``axis`` (the start recipe's and each stage's candidates)."""
    stages = config["study"].get("stages")
    if not stages:
        return []
    start = Recipe.parse(stages["start"])
    values = [getattr(start, axis)]
    for stage in stages["vary"]:
        for value in stage["values"]:
            values.append(getattr(start.replace(stage["axis"], value), axis))
    return values


def used_sources(config: Mapping[str, Any]) -> list[str]:
    """Sources that some run may need: listed recipes and every source a stage could choose."""
    names = {r.source for r in recipes(config)} | set(stage_values(config, "source"))
    return sorted(names - {NO_SOURCE})


def pretrained_sources(config: Mapping[str, Any]) -> list[str]:
    """Used sources that are pretrained by the workflow (they have a task)."""
    return [s for s in used_sources(config) if "task" in config["sources"][s]]


def source_settings(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Pretraining settings for one source: ``pretrain`` with the source's own overrides."""
    settings = dict(config["pretrain"])
    settings.update({k: v for k, v in config["sources"][source].items() if k not in ("task", "weights", "files")})
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
    """One dict per fine-tuning job of the listed recipes (default: study.recipes): task, arch, recipe, n, seed."""
    study = config["study"]
    names = study["recipes"] if recipe_names is None else recipe_names
    return [
        {"task": t, "arch": a, "recipe": r, "n": n, "seed": s}
        for t in study["targets"]
        for a in study["archs"]
        for r in names
        for n in study["sizes"]
        for s in study["seeds"]
    ]


def stage_candidates(config: Mapping[str, Any], stage: int, winner: str | None) -> list[str]:
    """Recipes that stage ``stage`` (0-based) compares: ``winner`` of the previous stage (or the start
    recipe) with the stage's axis set to each of its values; duplicates dropped, order kept."""
    stages = config["study"]["stages"]
    base = Recipe.parse(winner or stages["start"])
    spec = stages["vary"][stage]
    names: list[str] = []
    for value in spec["values"]:
        name = base.replace(spec["axis"], value).name
        if name not in names:
            names.append(name)
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
