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

#: Values of each recipe axis that the trainer implements. Other issues extend these sets.
SCHEDULES = ("onecycle",)
TRANSFERS = ("finetune",)
INITS = ("default", "transfer")
NO_SOURCE = "none"


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
        else:
            if sources is not None and recipe.source not in sources:
                known = ", ".join(sorted(sources)) or "none defined"
                raise InputError(f"{where}: source {recipe.source!r} is not under 'sources' ({known})")
            if recipe.init == "default":
                raise InputError(f"{where}: a source needs an init that uses it (e.g. 'transfer')")
        return recipe


def _check_choice(where: str, axis: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{where}: unknown {axis} {value!r} (choose from {', '.join(allowed)})")


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _with_defaults(validator_class: type) -> type:
    """A validator that also fills in schema defaults (the jsonschema FAQ recipe, $ref-aware)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "$ref" in sub and prop not in instance and "default" in sub:
                    instance[prop] = copy.deepcopy(sub["default"])
                elif "default" in sub and prop not in instance:
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
    if error.validator == "required":
        return f"config key {where}: {error.message}"
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
    for name, source in sources.items():
        if source["task"] not in tasks:
            raise InputError(f"config key sources.{name}.task: unknown task {source['task']!r}")
    study = config["study"]
    for target in study["targets"]:
        if target not in tasks:
            raise InputError(f"config key study.targets: unknown task {target!r}")
        if tasks[target]["type"] == "multiclass":
            raise InputError(f"config key study.targets: {target!r} is multiclass; targets are binary or multilabel")
    for recipe in study["recipes"]:
        Recipe.parse(recipe, sources)
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
    return [Recipe.parse(r, config.get("sources", {})) for r in config["study"]["recipes"]]


def used_sources(config: Mapping[str, Any]) -> list[str]:
    return sorted({r.source for r in recipes(config) if r.source != NO_SOURCE})


def source_settings(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Pretraining settings for one source: ``pretrain`` with the source's own overrides."""
    settings = dict(config["pretrain"])
    settings.update({k: v for k, v in config["sources"][source].items() if k != "task"})
    return settings


def used_tasks(config: Mapping[str, Any]) -> list[str]:
    """Every task the study needs: targets, source tasks, and tasks they exclude patients of."""
    tasks = config["tasks"]
    wanted = list(config["study"]["targets"]) + [config["sources"][s]["task"] for s in used_sources(config)]
    seen: list[str] = []
    while wanted:
        name = wanted.pop(0)
        if name not in seen:
            seen.append(name)
            wanted.extend(tasks[name]["exclude_patients_of"])
    return seen


def used_datasets(config: Mapping[str, Any]) -> list[str]:
    return sorted({config["tasks"][t]["dataset"] for t in used_tasks(config)})


def runs(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per fine-tuning job: task, arch, recipe, n, seed."""
    study = config["study"]
    return [
        {"task": t, "arch": a, "recipe": r, "n": n, "seed": s}
        for t in study["targets"]
        for a in study["archs"]
        for r in study["recipes"]
        for n in study["sizes"]
        for s in study["seeds"]
    ]
