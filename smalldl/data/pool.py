"""A target task's training pool, known at plan time (Snakemake's DAG build), before any job has run.

``study.sizes: auto`` derives the study's training sizes from it, and every study size is checked
against it before any data is prepared (smalldl/config.py). The pool is counted the way the split job
draws it (smalldl/data/splits.py: ``task_table`` then ``make_split``, with the same seeds) on an index
built without reading a single image:

- ``folder``: the CSV, through the folder adapter (files not checked);
- ``synthetic_chest``, ``synthetic_limb``: the generator's plan of patients, images and labels, from its
  params and the dataset's seed (no rendering);
- ``nih``: ``Data_Entry_2017_v2020.csv`` and the two split lists, where they already are
  (``params.path`` or ``resources/raw/<dataset>/``); ``chexpert``, ``mura``: their CSVs or folders at
  ``params.path``.

The count is exact except where it cannot be known yet, and then it is ``None`` with the reason: a
ChestX-ray14 copy not downloaded yet, a task that drops the patients of other tasks
(``exclude_patients_of``: those depend on the other tasks' splits and subsets), a fractal dataset
(multiclass labels only). Imported lazily by smalldl/config.py (pandas, no torch).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from smalldl import layout
from smalldl.data import index as index_mod
from smalldl.data import splits
from smalldl.errors import InputError
from smalldl.utils import derive_seed


@dataclass(frozen=True)
class Pool:
    """A task's training pool: ``images`` (None when not known at plan time) and what it rests on."""

    images: int | None
    why: str


_MEMOISED = ("synthetic_chest", "synthetic_limb")
_SYNTHETIC: dict[str, pd.DataFrame | str] = {}


def plan_index(name: str, spec: Mapping[str, Any], global_seed: int) -> pd.DataFrame | str:
    """The index the index job will build for dataset ``name`` (images not read), or why it cannot be
    built yet (a string). A synthetic plan, deterministic in its params, is memoised (the DAG build and
    the tests ask again); files on disk are read each time."""
    key = json.dumps([name, spec, global_seed], sort_keys=True, default=str)
    if key in _SYNTHETIC:
        return _SYNTHETIC[key]
    # the adapters print what they indexed: the index job says it again, with the images checked
    with contextlib.redirect_stderr(io.StringIO()):
        table = _plan_index(name, spec, global_seed)
    if spec["kind"] in _MEMOISED:
        _SYNTHETIC[key] = table
    return table


def _plan_index(name: str, spec: Mapping[str, Any], global_seed: int) -> pd.DataFrame | str:
    kind = spec["kind"]
    params = dict(spec.get("params") or {})
    where = f"dataset {name}"
    if kind in ("synthetic_chest", "synthetic_limb"):
        table = _synthetic_table(name, kind, params, derive_seed(global_seed, "dataset", name))
    elif kind == "fractal":
        return "a fractal dataset has multiclass labels only"
    elif kind == "nih":
        from smalldl.data.sources import nih

        root = Path(params.get("path") or f"{layout.RAW}/{name}")
        missing = [f for f in (nih.ENTRY, nih.TRAIN_VAL, nih.TEST) if not (root / f).is_file()]
        if missing:
            return f"the ChestX-ray14 metadata ({', '.join(missing)}) is not in {root} yet"
        table = nih.read_entries(root / nih.ENTRY)
        table["official_split"] = nih.official_split(
            table, nih.read_list(root / nih.TRAIN_VAL), nih.read_list(root / nih.TEST), f"{where} ({root})"
        )
        table["path"] = table["image_id"]
    else:
        table = index_mod.build_index(name, spec, check_files=False)
    return index_mod.check_index(table, where)


def _synthetic_table(name: str, kind: str, params: dict[str, Any], seed: int) -> pd.DataFrame:
    if kind == "synthetic_chest":
        from smalldl.data.sources import synthetic_chest as module

        keys = ("n_patients", "images_per_patient", "prevalence")
    else:
        from smalldl.data.sources import synthetic_limb as module

        keys = ("n_patients", "images_per_study", "abnormal_rate")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in keys}
    try:
        return module._table(module.plan(seed=seed, **kwargs))
    except (TypeError, ValueError) as exc:
        raise InputError(f"datasets.{name}.params for kind {kind}: {exc}") from None


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
    and list files, in the local copy (``params.path``) or where fetch_nih downloaded them
    (``resources/raw/<name>/``); CheXpert: the split CSVs; MURA: the image path lists. Files that are not
    there (yet) are left out: the index job itself says what is missing, naming the CSV line. A synthetic
    dataset is the input resources/raw/<name>/ of its own rule."""
    kind = spec["kind"]
    params = dict(spec.get("params") or {})
    files: list[Path] = []
    try:
        if kind == "folder" and params.get("path"):
            from smalldl.data.sources import folder

            root = Path(params["path"])
            csv = Path(params.get("csv") or "labels.csv")
            csv = csv if csv.is_absolute() else root / csv
            files.append(csv)
            column = params.get("path_column") or "path"
            with contextlib.suppress(InputError):
                raw, _, _ = folder.read_labels_csv(csv, column, params.get("delimiter"))
                if column in raw.columns:
                    for rel in raw[column].str.strip():
                        if rel:
                            files.append(Path(rel) if Path(rel).is_absolute() else root / rel)
        elif kind == "nih":
            from smalldl.data.sources import nih

            # read where fetch_nih verified them (its record's root): the local copy, or resources/raw/<name>/
            # where it downloaded them (its output is only the record: a metadata file replaced later is this
            # input)
            root = Path(params.get("path") or f"{layout.RAW}/{name}")
            files += [root / f for f in (nih.ENTRY, nih.TRAIN_VAL, nih.TEST)]
        elif kind == "chexpert" and params.get("path"):
            from smalldl.data.sources import chexpert

            root = chexpert.find_root(params["path"], params.get("version", "auto"), name)
            files += [root / chexpert.CSVS[s][0] for s in params.get("splits", ["train", "valid"])]
        elif kind == "mura" and params.get("path"):
            from smalldl.data.sources import mura

            root = mura.find_root(params["path"], name)
            files += [root / f"{s}_image_paths.csv" for s in params.get("splits", ["train", "valid"])]
    except InputError:
        pass  # the index job says it, naming the file
    return list(dict.fromkeys(str(f) for f in files if f.is_file()))
