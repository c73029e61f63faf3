"""Schema validation with defaults, the ``preset``, the cross-reference checks, ``validate`` (in
order: preset, implied sources, schema defaults, the study's derived keys, references, leaks, sizes)
and ``load``; a train_settings block checked on its own (``train_settings``). jsonschema and yaml are
imported where a config is read or checked: a training job, which imports the config package for its
recipe, reads none (0.05 to 0.1 s of CPU each job).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

from smalldl.config.datasets import same_dataset
from smalldl.config.grid import source_chain, stage_reach
from smalldl.config.leaks import check_offered_leaks
from smalldl.config.recipes import ARCHS, DEFAULT_SOURCE_RECIPE, IMAGENET, IMAGENET_SOURCE, NO_SOURCE, Recipe
from smalldl.config.study import _resolve_sizes, patient_id_warnings, resolve_study, study_summary, unused_warnings
from smalldl.data import kinds
from smalldl.errors import InputError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


#: ``preset``: values filled in where the config does not set them (before the schema's defaults).
#: paper = the schema's defaults alone; cpu = the demo's CPU sizes (width 64, crop 56, EfficientNet-Lite0,
#: whose ImageNet weights ship with a pip package, 6 epochs, max_lr without the lr finder; channels_last with
#: the CPU kernels, the fastest there: benchmarks/depthwise_grad.py --matrix).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {
        "preprocess": {"width": 64},
        "train": {
            "crop": 56,
            "epochs": 6,
            "lr_finder": {"enabled": False},
            "channels_last": "on",
            "cpu_kernels": "on",
        },
        "pretrain": {"crop": 56, "epochs": 6, "channels_last": "on", "cpu_kernels": "on"},
        "study": {"archs": ["efficientnet_lite0"]},
    },
}


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh)


def _with_defaults(validator_class: type) -> type:
    """A validator that also fills in schema defaults (the jsonschema FAQ recipe)."""
    import jsonschema

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


def validate(
    config: dict[str, Any],
    schema: dict[str, Any] | None = None,
    *,
    check_pools: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Validate ``config`` in place and complete the study. Returns it.

    In order: the ``preset``'s values where the config sets none, ``sources.imagenet`` where the config
    defines no source of that name, the schema's defaults; then what the study leaves out
    (``resolve_study``: its targets, recipes) and the cross-references; then the training sizes against
    each target's training pool, read from the data's metadata (smalldl/data/pool.py):
    ``study.sizes: auto`` becomes the sizes it stands for, and with ``check_pools`` every size is
    checked (``False`` skips the check where the sizes are listed: a job's process re-reads the config
    the main process checked). ``say`` receives the lines the run prints before any work: a
    ``WARNING:`` for each dataset or source the study does not use and for very small pools, and what
    the study is (``study_summary``).

    Raises InputError with a message naming the offending key.
    """
    import jsonschema

    schema = schema if schema is not None else load_schema()
    _apply_preset(config)
    sources = config.get("sources")
    if sources is None and "sources" not in config:
        sources = config["sources"] = {}
    if isinstance(sources, dict) and IMAGENET not in sources:
        sources[IMAGENET] = dict(IMAGENET_SOURCE)
        implied = [IMAGENET]
    else:
        implied = []
    validator_cls = _with_defaults(jsonschema.validators.validator_for(schema))
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), _key_path(e)))
    if errors:
        raise InputError(_format_error(errors[0]))
    derived = resolve_study(config)
    _check_references(config)
    check_offered_leaks(config)
    sizes_note = _resolve_sizes(config, check_pools, say or _quiet)
    if sizes_note:
        derived["sizes"] = sizes_note
    if say is not None:
        for line in unused_warnings(config, implied) + patient_id_warnings(config):
            say(line)
        say(study_summary(config, derived))
    return config


def _quiet(_line: str) -> None:
    pass


def _apply_preset(config: dict[str, Any]) -> None:
    """Fill in the ``preset``'s values that the config does not set (an unknown preset is left to the
    schema's check)."""
    name = config.get("preset", "paper")
    if isinstance(name, str) and PRESETS.get(name):
        _fill(config, PRESETS[name])


def _fill(node: dict[str, Any], values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, Mapping):
            if node.get(key) is None:
                node[key] = {}
            if isinstance(node[key], dict):
                _fill(node[key], value)
        elif key not in node:
            node[key] = copy.deepcopy(value)


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
            if not same_dataset(config, tasks[other]["dataset"], task["dataset"]):
                raise InputError(
                    f"config key tasks.{name}.exclude_patients_of: task {other!r} is on dataset "
                    f"{tasks[other]['dataset']!r}, other images than {task['dataset']!r} as far as the config "
                    "tells (patient ids of different data name different people): point both datasets at the "
                    "same folder, or use one dataset entry"
                )
        if task.get("test_split") == "official":
            ds = datasets[task["dataset"]]
            if not kinds.KINDS[ds["kind"]].has_official_split(ds["params"]):
                raise InputError(
                    f"config key tasks.{name}.test_split: dataset {task['dataset']!r} (kind {ds['kind']}) has no "
                    f"official test set ({kinds.official_split_needs()})"
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
    for i, recipe in enumerate(study["recipes"]):
        if Recipe.parse(recipe, sources).epochs == config["train"]["epochs"]:
            raise InputError(
                f"config key study.recipes[{i}]: {recipe!r} names train.epochs ({config['train']['epochs']}); "
                "drop its -e suffix (a recipe trained for train.epochs has the plain name)"
            )
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
    for i, arch in enumerate(study["archs"]):
        if arch not in ARCHS:
            close = difflib.get_close_matches(arch, ARCHS, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise InputError(
                f"config key study.archs[{i}]: unknown architecture {arch!r}{hint}: smallcnn, "
                "efficientnet_lite0 or a torchvision classification model (e.g. densenet121, resnet50)"
            )
    crop = config["train"]["crop"]
    if crop > config["preprocess"]["width"]:
        raise InputError(f"config key train.crop: {crop} is larger than preprocess.width")


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML config file."""
    import yaml

    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"config file {path} is not valid YAML: {exc}") from None
    return validate(config)


def train_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Training settings (the schema's ``train_settings``) with defaults filled in and checked."""
    import jsonschema

    schema = load_schema()
    sub = {"$defs": schema["$defs"], **schema["$defs"]["train_settings"]}
    settings = copy.deepcopy(dict(overrides or {}))
    validator = _with_defaults(jsonschema.validators.validator_for(schema))(sub)
    errors = sorted(validator.iter_errors(settings), key=lambda e: _key_path(e))
    if errors:
        raise InputError(_format_error(errors[0]))
    return settings
