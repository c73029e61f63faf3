"""A target task's training pool, known at plan time (Snakemake's DAG build), before any job has run.

``study.sizes: auto`` derives the study's training sizes from it, and every study size is checked
against it before any data is prepared (smalldl/config/study.py). The pool is counted the way the split job
draws it (smalldl/data/splits.py: ``task_table`` then ``make_split``, with the same seeds) on an index
built without reading a single image, by the ``plan_index`` of the dataset kind's adapter
(smalldl/data/kinds.py):

- ``folder``: the CSV, through the folder adapter (files not checked);
- ``synthetic_chest``, ``synthetic_limb``: the generator's plan of patients, images and labels, from its
  params and the dataset's seed (no rendering);
- ``nih``: ``Data_Entry_2017_v2020.csv`` and the two split lists, where they already are
  (``params.path`` or ``resources/raw/<dataset>/``); ``chexpert``, ``mura``: their CSVs or folders at
  ``params.path``.

The count is exact except where it cannot be known yet, and then it is ``None`` with the reason: a
ChestX-ray14 copy not downloaded yet, a task that drops the patients of other tasks
(``exclude_patients_of``: those depend on the other tasks' splits and subsets), a fractal dataset
(multiclass labels only). Imported lazily by smalldl/config/study.py (pandas, no torch).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from smalldl.data import index as index_mod
from smalldl.data import kinds, splits
from smalldl.errors import InputError
from smalldl.utils import derive_seed


@dataclass(frozen=True)
class Pool:
    """A task's training pool: ``images`` (None when not known at plan time) and what it rests on."""

    images: int | None
    why: str


_PLANS: dict[str, pd.DataFrame | str] = {}


def plan_index(name: str, spec: Mapping[str, Any], global_seed: int) -> pd.DataFrame | str:
    """The index the index job will build for dataset ``name`` (images not read: its kind's adapter's
    ``plan_index``, smalldl.data.kinds), or why it cannot be built yet (a string). A synthetic plan,
    deterministic in its params, is memoised (the DAG build and the tests ask again); files on disk are
    read each time."""
    key = json.dumps([name, spec, global_seed], sort_keys=True, default=str)
    if key in _PLANS:
        return _PLANS[key]
    kind = kinds.kind(spec["kind"], f"datasets.{name}.kind")
    adapter = importlib.import_module(kind.adapter)
    # the adapters print what they indexed: the index job says it again, with the images checked
    with contextlib.redirect_stderr(io.StringIO()):
        table = adapter.plan_index(name, dict(spec.get("params") or {}), derive_seed(global_seed, "dataset", name))
    if not isinstance(table, str):
        table = index_mod.check_index(table, f"dataset {name}")
    if kind.synthetic:
        _PLANS[key] = table
    return table


def training_pool(config: Mapping[str, Any], task_name: str) -> Pool:
    """The training pool of ``task_name``: the images of its training split, from which every training
    subset is drawn (the split job's count, exactly), or None with the reason it is not known yet."""
    task = config["tasks"][task_name]
    if task["exclude_patients_of"]:
        others = ", ".join(task["exclude_patients_of"])
        return Pool(None, f"it drops the patients of {others} (known once their splits and subsets are drawn)")
    dataset = task["dataset"]
    index = plan_index(dataset, config["datasets"][dataset], config["seed"])
    if isinstance(index, str):
        return Pool(None, index)
    table = splits.task_table(index, task_name, task, seed=config["seed"])
    split, _ = splits.make_split(table, task_name, task, config["seed"], dataset)
    train = int((split["split"] == "train").sum())
    return Pool(train, f"{len(table)} images of dataset {dataset}, {train} of them in the training split")


__all__ = ["Pool", "plan_index", "training_pool"]


def source_files(name: str, spec: Mapping[str, Any]) -> list[str]:
    """The files on disk that dataset ``name``'s index is built from, at plan time (DAG build): the inputs
    of its index job, so that Snakemake reruns the index and all that depends on it when one changes
    (its modification time). A folder dataset: the CSV and every image it lists; ChestX-ray14: its entries
    and list files, in the local copy (``params.path``) or where fetch_nih downloaded them (``resources/raw/<name>/``);
    CheXpert: the split CSVs; MURA: the image path lists. Files that are not there (yet) are left out: the
    index job itself says what is missing, naming the CSV line. A synthetic dataset is the input raw/ of its
    own rule."""
    kind = kinds.kind(spec["kind"], f"datasets.{name}.kind")
    try:
        files = importlib.import_module(kind.adapter).index_files(name, dict(spec.get("params") or {}))
    except InputError:
        files = []  # the index job says it, naming the file
    return list(dict.fromkeys(str(f) for f in files if f.is_file()))
