"""What a study leaves out and what it is: default targets and recipes, ``study.sizes: auto`` from the
training pools and the sizes' check against them, and the start-up lines (study summary, unused
datasets and sources, folder datasets without patient ids).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from smalldl.config.grid import pretrained_sources, used_sources, used_tasks
from smalldl.config.recipes import BASE_RECIPES, IMAGENET
from smalldl.data import kinds
from smalldl.errors import InputError

#: study.sizes: auto takes the paper's sizes up to the training pool (``auto_sizes``).
SIZE_LADDER = (50, 100, 200, 500, 1000, 2000)


#: ... and the whole pool as one more size when it is at least this many times the largest size kept.
POOL_STEP = 1.25


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
    """A ``WARNING:`` line for each dataset the study reads whose CSV has no patient column (a kind whose
    patient ids are optional: ``Kind.patient_column``, the folder kind): every image is then its own patient,
    so one person's follow-up images can sit on both sides of a split."""
    tasks = config["tasks"]
    lines = []
    for name in dict.fromkeys(tasks[t]["dataset"] for t in used_tasks(config)):
        spec = config["datasets"][name]
        params = spec.get("params") or {}
        param = kinds.KINDS[spec["kind"]].patient_column
        if param is None or not params.get("path"):
            continue
        csv = Path(params.get("csv") or "labels.csv")
        csv = csv if csv.is_absolute() else Path(params["path"]) / csv
        column = params.get(param) or "patient_id"
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
