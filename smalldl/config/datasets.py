"""The identity of data, as far as the config tells: where a dataset's images are, which entries hold
the same images (and so the same patients), and a source's anatomy relative to a target's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smalldl import layout
from smalldl.config.grid import used_sources
from smalldl.data import kinds


def data_root(config: Mapping[str, Any], dataset: str) -> Path | None:
    """Where a dataset's images are, as far as the config says (resolved against the working directory,
    links followed): ``params.path``, else resources/raw/<dataset>/ for the kinds the workflow writes there
    (``Kind.writes_raw``), else None."""
    spec = config["datasets"][dataset]
    path = (spec.get("params") or {}).get("path")
    if path:
        return Path(os.path.realpath(Path(str(path)).expanduser()))
    if kinds.KINDS[spec["kind"]].writes_raw:
        return Path(os.path.realpath(Path(layout.RAW) / dataset))
    return None


def same_dataset(config: Mapping[str, Any], a: str, b: str) -> bool:
    """Whether two dataset entries hold the same images, as far as the config can tell without reading
    them: the same entry; two entries of one public kind (``Kind.public``: every ChestX-ray14 entry is
    ChestX-ray14, whatever its params, a local copy or a download, small or full images); the same folder;
    or a dataset of a kind that ``nests`` (``folder``) inside the other's folder (e.g. the NIH images
    folder). Only the data tells the rest (a copy elsewhere, paths outside the folder): the study gate
    compares the images themselves (smalldl.leakage)."""
    if a == b:
        return True
    datasets = config["datasets"]
    kind_a, kind_b = (kinds.KINDS[datasets[d]["kind"]] for d in (a, b))
    if kind_a == kind_b and kind_a.public:
        return True
    root_a, root_b = data_root(config, a), data_root(config, b)
    if root_a is None or root_b is None:
        return False
    return (
        root_a == root_b or (kind_a.nests and root_b in root_a.parents) or (kind_b.nests and root_a in root_b.parents)
    )


def same_data(config: Mapping[str, Any], task_a: str, task_b: str) -> bool:
    """Whether two tasks are on the same images (``same_dataset`` of their datasets): only then can their
    patient ids name the same people."""
    tasks = config["tasks"]
    return same_dataset(config, tasks[task_a]["dataset"], tasks[task_b]["dataset"])


def source_anatomy(config: Mapping[str, Any], source: str, target: str) -> str | None:
    """How a source's images relate to a target's, for the findings (smalldl.results.findings): 'same'
    (same anatomy, e.g. ChestX-ray13 or CheXpert for a ChestX-ray14 target), 'other' (e.g. MURA), 'natural'
    (ImageNet and other natural images), or None (unknown). ``sources.<name>.anatomy`` decides when given;
    else published weights are natural, and a source task's dataset kind is compared with the target's
    (``Kind.anatomy``, None for a folder dataset; two tasks on the same data are the same anatomy whatever their
    kind)."""
    spec = config["sources"][source]
    if spec.get("anatomy"):
        return spec["anatomy"]
    if "weights" in spec:
        return "natural"
    task = spec["task"]
    if same_data(config, task, target):
        return "same"
    kind_names = (config["datasets"][config["tasks"][t]["dataset"]]["kind"] for t in (task, target))
    src, tgt = (kinds.KINDS[k].anatomy for k in kind_names)
    if src == "natural":
        return "natural"
    if src is None or tgt is None:
        return None
    return "same" if src == tgt else "other"


def source_anatomies(config: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    """target -> used source -> ``source_anatomy``."""
    return {t: {s: source_anatomy(config, s, t) for s in used_sources(config)} for t in config["study"]["targets"]}
