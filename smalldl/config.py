"""Configuration: schema validation with defaults, semantic checks, recipes and the study grid.

Imported by the Snakefile at DAG-build time, so it must stay light: no torch, no pandas. jsonschema and yaml
are imported where a config is read or checked: a training job, which imports this module for its recipe,
reads none (0.05 to 0.1 s of CPU each job).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smalldl.errors import InputError

if TYPE_CHECKING:
    import jsonschema

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
    """How one model is trained: schedule x transfer method x source x init (``a-b-c-d``), and for how
    many epochs when not ``train.epochs`` (``a-b-c-d-e<N>``: a stage's ``epochs``, or a listed recipe)."""

    schedule: str
    transfer: str
    source: str
    init: str
    epochs: int | None = None

    @property
    def name(self) -> str:
        return self.axes_name + (f"-e{self.epochs}" if self.epochs is not None else "")

    @property
    def axes_name(self) -> str:
        """The name without the epochs: the lr finder's recipe (its sweep does not depend on epochs)."""
        return f"{self.schedule}-{self.transfer}-{self.source}-{self.init}"

    @classmethod
    def parse(cls, name: str, sources: Mapping[str, Any] | None = None, where: str | None = None) -> Recipe:
        parts = name.split("-")
        where = f"{where or 'study.recipes'}: {name!r}"
        epochs = None
        if len(parts) == 5 and re.fullmatch(r"e[1-9][0-9]*", parts[4]):
            epochs = int(parts.pop()[1:])
        if len(parts) != 4:
            raise InputError(
                f"{where} must be schedule-transfer-source-init, e.g. onecycle-finetune-none-default "
                "(optionally -e<epochs>, e.g. onecycle-finetune-none-default-e10)"
            )
        recipe = cls(*parts, epochs=epochs)
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
        return Recipe(**parts, epochs=self.epochs)

    def with_epochs(self, epochs: int | None) -> Recipe:
        """This recipe trained for ``epochs`` (None: ``train.epochs``)."""
        return dataclasses.replace(self, epochs=epochs)

    def with_set(self, values: Mapping[str, str]) -> Recipe:
        """This recipe with several axes set (a stage's ``set:``): the source first (it decides which
        transfer and init are valid), then the other axes in recipe order."""
        recipe = self
        for axis in sorted(values, key=lambda a: (a != "source", AXES.index(a))):
            recipe = recipe.replace(axis, values[axis])
        return recipe


#: How a source with a task is pretrained unless sources.<name>.recipe says otherwise: from scratch.
DEFAULT_SOURCE_RECIPE = "onecycle-finetune-none-default"

#: The source implied when the config defines none of that name: the published ImageNet weights.
IMAGENET = "imagenet"
IMAGENET_SOURCE = {"weights": "imagenet"}
#: The provenance recorded for weights read from a file the config names (sources.<name>.files), and for
#: source models trained here from them: nothing here knows what they were trained on (the imagenet_weights
#: and pretrain jobs write it; source_models.csv, the answer and the run's log say so).
UNVERIFIED = "unverified weights file"
#: The recipes of a study that lists none (and no stages): training from scratch, and from ImageNet with
#: fine-tuning of all layers and with gradual unfreezing; none needs data beyond the study's own. Every
#: source the config defines adds onecycle-finetune-<source>-transfer (``default_recipes``).
BASE_RECIPES = (
    "onecycle-finetune-none-default",
    "onecycle-finetune-imagenet-transfer",
    "onecycle-gradual-imagenet-transfer",
)
#: study.sizes: auto takes the paper's sizes up to the training pool (``auto_sizes``).
SIZE_LADDER = (50, 100, 200, 500, 1000, 2000)
#: ... and the whole pool as one more size when it is at least this many times the largest size kept.
POOL_STEP = 1.25

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

#: torchvision's classification models (torchvision.models.list_models(module=torchvision.models) of the
#: pinned torchvision; a test keeps the two equal), named here so that the DAG build checks an
#: architecture without importing torch.
TORCHVISION_ARCHS = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121",
    "densenet161", "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
    "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large",
    "mobilenet_v3_small", "regnet_x_16gf", "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf",
    "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf", "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf",
    "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_8gf", "resnet101",
    "resnet152", "resnet18", "resnet34", "resnet50", "resnext101_32x8d", "resnext101_64x4d",
    "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16",
    "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2", "wide_resnet50_2",
)  # fmt: skip
#: Every architecture study.archs may name (smalldl/models.py builds each).
ARCHS = ("smallcnn", "efficientnet_lite0", *TORCHVISION_ARCHS)


def _check_choice(where: str, axis: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{where}: unknown {axis} {value!r} (choose from {', '.join(allowed)})")


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
    import jsonschema

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


def default_targets(config: Mapping[str, Any]) -> list[str]:
    """The targets of a study that names none: every task, except multiclass tasks (no AUC to report)
    and the tasks sources are pretrained on."""
    source_tasks = {s["task"] for s in config.get("sources", {}).values() if "task" in s}
    return [t for t, spec in config["tasks"].items() if spec["type"] != "multiclass" and t not in source_tasks]


def default_recipes(config: Mapping[str, Any]) -> list[str]:
    """The recipes of a study that lists none and has no stages: ``BASE_RECIPES`` (scratch, ImageNet with
    fine-tuning and with gradual unfreezing) and onecycle-finetune-<source>-transfer for every other
    source the config defines."""
    others = [f"onecycle-finetune-{s}-transfer" for s in config.get("sources", {}) if s != IMAGENET]
    return [*BASE_RECIPES, *others]


def resolve_study(config: dict[str, Any]) -> dict[str, str]:
    """Fill in what ``study`` leaves out: targets (``default_targets``) and recipes (``default_recipes``
    without stages, none with them). Returns what was derived, key -> how (for the study summary)."""
    study = config["study"]
    derived: dict[str, str] = {}
    if "targets" not in study:
        study["targets"] = default_targets(config)
        if not study["targets"]:
            raise InputError(
                "config key study.targets: no task can be a target by default (multiclass tasks and the "
                "tasks of sources are not targets): list the targets"
            )
        derived["targets"] = "default: every task but multiclass ones and sources' tasks"
    if study["recipes"] is None:
        study["recipes"] = [] if study.get("stages") else default_recipes(config)
        if not study.get("stages"):
            derived["recipes"] = "default: scratch, ImageNet fine-tuned and gradually unfrozen, one per source defined"
    return derived


def auto_sizes(pool: int) -> list[int]:
    """``study.sizes: auto`` for a training pool of ``pool`` images: the paper's sizes
    (``SIZE_LADDER``: 50 to 2000) up to the pool, plus the pool itself when it is below the last one and
    at least ``POOL_STEP`` times the largest size kept (the whole pool is a point of the learning curve,
    not a near-copy of the size below it); a pool under 50 gives the one size it has."""
    if pool < 2:
        raise InputError(f"config key study.sizes: a training pool of {pool} image(s) is too small to train on")
    sizes = [n for n in SIZE_LADDER if n <= pool]
    if not sizes:
        return [pool]
    if pool < SIZE_LADDER[-1] and pool >= POOL_STEP * sizes[-1]:
        sizes.append(pool)
    return sizes


def _resolve_sizes(config: dict[str, Any], check_pools: bool, say: Callable[[str], None]) -> str | None:
    """``study.sizes: auto`` -> sizes from the smallest training pool of the targets; with ``check_pools``
    every listed size (and the lr finder's) checked against every pool known at plan time. Returns how
    auto sizes were derived (None for listed sizes)."""
    study = config["study"]
    auto = study["sizes"] == "auto"
    if not (auto or check_pools):
        return None
    from smalldl.data.pool import training_pool  # pandas: only when the pools are needed

    pools = {t: training_pool(config, t) for t in study["targets"]}
    known = {t: p.images for t, p in pools.items() if p.images is not None}
    note = None
    if auto:
        if known:
            task = min(known, key=known.__getitem__)
            pool = known[task]
            try:
                study["sizes"] = auto_sizes(pool)
            except InputError as exc:
                raise InputError(f"{exc} (task {task!r}: {pools[task].why})") from None
            note = f"auto: the paper's sizes up to the training pool of {task}, {pool} images"
            if pool < SIZE_LADDER[0]:
                say(
                    f"WARNING: study.sizes auto: task {task!r} has {pool} training images, fewer than the "
                    f"paper's smallest size ({SIZE_LADDER[0]}): one size, {pool}; its results will be very noisy"
                )
        else:
            study["sizes"] = list(SIZE_LADDER)
            note = "auto: the paper's sizes, no training pool known yet"
        for task, p in pools.items():
            if p.images is None:
                say(
                    f"WARNING: study.sizes auto: the training pool of task {task!r} is not known before the "
                    f"data is prepared ({p.why}); a size larger than it stops at its subset job: list study.sizes"
                )
    lr = config["train"]["lr_finder"]
    tuned = lr["size"] if lr["enabled"] and lr.get("size") else None
    for task, pool in known.items():
        for key, sizes in (("study.sizes", study["sizes"]), ("train.lr_finder.size", [tuned] if tuned else [])):
            too_big = [n for n in sizes if n > pool]
            if too_big:
                raise InputError(
                    f"config key {key}: {max(too_big)} is larger than the training pool of task {task!r} "
                    f"({pool} images: {pools[task].why})"
                )
    return note


def unused_warnings(config: Mapping[str, Any], implied: list[str] | tuple[str, ...] = ()) -> list[str]:
    """A ``WARNING:`` line for each dataset that no task of the study reads (no target, no source it
    uses, no task their splits avoid) and each source no recipe or stage uses (``implied``: sources
    the config did not define, never reported)."""
    tasks = config["tasks"]
    read = {tasks[t]["dataset"] for t in used_tasks(config)}
    lines = [
        f"WARNING: datasets.{name} is not used: no target of the study and no source it uses is on it, "
        "so it is not read (make a task on it a target, study.targets, or remove it)"
        for name in config["datasets"]
        if name not in read
    ]
    used = set(used_sources(config))
    lines += [
        f"WARNING: sources.{name} is not used: no recipe or stage of the study starts from it"
        + (", so it is not pretrained" if "task" in spec else "")
        for name, spec in config.get("sources", {}).items()
        if name not in used and name not in implied
    ]
    return lines


def _csv_header(csv: Path) -> list[str] | None:
    """The column names of a folder dataset's CSV, read from its first non-blank line (``,`` ``;`` or tab,
    whichever splits it most; None when it cannot be read: the index rule says why)."""
    try:
        with open(csv, encoding="utf-8-sig", errors="replace") as fh:
            line = next((ln for ln in fh if ln.strip(" \t\r\n,;")), "")
    except OSError:
        return None
    fields = max((line.split(d) for d in (",", ";", "\t")), key=len)
    return [f.strip().strip('"').strip() for f in fields]


def patient_id_warnings(config: Mapping[str, Any]) -> list[str]:
    """A ``WARNING:`` line for each folder dataset the study reads whose CSV has no patient column: every
    image is then its own patient, so one person's follow-up images can sit on both sides of a split."""
    tasks = config["tasks"]
    lines = []
    for name in dict.fromkeys(tasks[t]["dataset"] for t in used_tasks(config)):
        spec = config["datasets"][name]
        params = spec.get("params") or {}
        if spec["kind"] != "folder" or not params.get("path"):
            continue
        csv = Path(params.get("csv") or "labels.csv")
        csv = csv if csv.is_absolute() else Path(params["path"]) / csv
        column = params.get("patient_column") or "patient_id"
        header = _csv_header(csv)
        if header is not None and column not in header:
            lines.append(
                f"WARNING: datasets.{name}: {csv} has no patient column {column!r} (params.patient_column), so "
                "every image is its own patient: follow-up images of one person can be split between training "
                "and validation/test (or between a source and a target), which inflates the AUCs; add the "
                "patient ids if anyone has more than one image"
            )
    return lines


def study_summary(config: Mapping[str, Any], derived: Mapping[str, str] | None = None) -> str:
    """What the study runs, in a few lines: targets, architectures, recipes (or stages), sizes, seeds,
    each key the study left out saying how it was derived, and which data each dataset is read for."""
    study, derived = config["study"], derived or {}

    def line(key: str, values: Any) -> str:
        how = f" ({derived[key]})" if key in derived else ""
        return f"  {key}: {', '.join(map(str, values))}{how}"

    lines = ["study:", line("targets", study["targets"]), line("archs", study["archs"])]
    if study["recipes"]:
        lines.append(line("recipes", study["recipes"]))
    if study.get("stages"):
        axes = ", ".join(stage["axis"] for stage in study["stages"]["vary"])
        lines.append(f"  stages: from {study['stages']['start']}, varying {axes}")
    lines += [line("sizes", study["sizes"]), line("seeds", study["seeds"])]
    tasks = config["tasks"]
    sources = config.get("sources", {})
    readers: dict[str, dict[str, list[str]]] = {}
    for t in study["targets"]:
        readers.setdefault(tasks[t]["dataset"], {}).setdefault("targets", []).append(t)
    for s in pretrained_sources(config):
        readers.setdefault(tasks[sources[s]["task"]]["dataset"], {}).setdefault("sources", []).append(s)
    for name, why in readers.items():
        uses = " and ".join(f"{what} {', '.join(names)}" for what, names in why.items())
        lines.append(f"  data: datasets.{name} ({config['datasets'][name]['kind']}) for {uses}")
    return "\n".join(lines)


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


#: Dataset kinds that are one public dataset, whatever an entry calls it or sets in its params (a local
#: copy or a download, a timeout, CheXpert's small or full images): two entries of such a kind hold the same
#: patients.
PUBLIC_KINDS = {"nih": "ChestX-ray14", "chexpert": "CheXpert", "mura": "MURA"}
#: Kinds whose images are written by the workflow into raw/<dataset>/ (without params.path).
RAW_KINDS = ("nih", "synthetic_chest", "synthetic_limb", "fractal")


def data_root(config: Mapping[str, Any], dataset: str) -> Path | None:
    """Where a dataset's images are, as far as the config says (resolved against the working directory,
    links followed): ``params.path``, else raw/<dataset>/ for the kinds the workflow writes there, else
    None."""
    spec = config["datasets"][dataset]
    path = (spec.get("params") or {}).get("path")
    if path:
        return Path(os.path.realpath(Path(str(path)).expanduser()))
    if spec["kind"] in RAW_KINDS:
        return Path(os.path.realpath(Path("raw") / dataset))
    return None


def same_dataset(config: Mapping[str, Any], a: str, b: str) -> bool:
    """Whether two dataset entries hold the same images, as far as the config can tell without reading
    them: the same entry; two entries of one public kind (``PUBLIC_KINDS``: every ChestX-ray14 entry is
    ChestX-ray14, whatever its params); the same folder; or a ``folder`` dataset inside the other's folder
    (e.g. the NIH images folder). Only the data tells the rest (a copy elsewhere, paths outside the folder):
    the study gate compares the images themselves (smalldl.leakage)."""
    if a == b:
        return True
    datasets = config["datasets"]
    kind_a, kind_b = datasets[a]["kind"], datasets[b]["kind"]
    if kind_a == kind_b and kind_a in PUBLIC_KINDS:
        return True
    root_a, root_b = data_root(config, a), data_root(config, b)
    if root_a is None or root_b is None:
        return False
    return (
        root_a == root_b
        or (kind_a == "folder" and root_b in root_a.parents)
        or (kind_b == "folder" and root_a in root_b.parents)
    )


def same_data(config: Mapping[str, Any], task_a: str, task_b: str) -> bool:
    """Whether two tasks are on the same images (``same_dataset`` of their datasets): only then can their
    patient ids name the same people."""
    tasks = config["tasks"]
    return same_dataset(config, tasks[task_a]["dataset"], tasks[task_b]["dataset"])


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


def train_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Training settings (the schema's ``train_settings``) with defaults filled in and checked."""
    schema = load_schema()
    sub = {"$defs": schema["$defs"], **schema["$defs"]["train_settings"]}
    settings = copy.deepcopy(dict(overrides or {}))
    import jsonschema

    validator = _with_defaults(jsonschema.validators.validator_for(schema))(sub)
    errors = sorted(validator.iter_errors(settings), key=lambda e: _key_path(e))
    if errors:
        raise InputError(_format_error(errors[0]))
    return settings
