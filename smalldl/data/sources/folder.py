"""Bring your own data: a folder of PNG / JPEG / DICOM images plus a CSV describing them.

CSV (``params.csv``, default ``labels.csv`` in ``params.path``), one row per image:

- ``path`` (``params.path_column``): the image file, relative to ``params.path`` (or absolute);
- one or more label columns: integers (0/1 for binary and multilabel tasks, class numbers for
  multiclass; -1 = uncertain: masked in the loss and AUC of multilabel tasks, the image left out of
  binary tasks on that label). ``params.labels`` names them; by default
  every other numeric column is a label;
- optional ``patient_id`` (``params.patient_column``): without it every image is its own patient;
- optional ``view`` (``params.view_column``), ``image_id`` (``params.image_id_column``; default the path
  without its suffix) and a fixed test set (``params.split_column``: ``train``/``val``/``train_val`` or
  ``test``; tasks use it with ``test_split: official``).

The images are indexed where they are; nothing is copied.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from smalldl.data.dicom import SUFFIXES as DICOM_SUFFIXES
from smalldl.data.index import read_text_csv
from smalldl.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)
_SPLITS = {"train": "train_val", "val": "train_val", "train_val": "train_val", "test": "test"}


def build_index(params: Mapping[str, Any], dataset: str = "folder", check_files: bool = True) -> pd.DataFrame:
    if not params.get("path"):
        raise InputError(f"datasets.{dataset}.params.path is not set: the folder that holds your images")
    root = Path(params["path"])
    if not root.is_dir():
        raise InputError(f"datasets.{dataset}.params.path: folder {root} does not exist")
    csv = Path(params.get("csv") or "labels.csv")
    csv = csv if csv.is_absolute() else root / csv
    raw = read_text_csv(csv, missing=f"datasets.{dataset}.params.csv: {csv} does not exist")
    cols = {
        "path": params.get("path_column", "path"),
        "patient": params.get("patient_column", "patient_id"),
        "view": params.get("view_column", "view"),
        "image_id": params.get("image_id_column"),
        "split": params.get("split_column"),
    }
    if cols["path"] not in raw.columns:
        raise InputError(f"{csv}: missing column {cols['path']!r} (the image paths; params.path_column)")
    for key in ("image_id", "split"):
        if cols[key] and cols[key] not in raw.columns:
            raise InputError(f"{csv}: missing column {cols[key]!r} (params.{key}_column)")
    reserved = {c for c in cols.values() if c}
    labels = params.get("labels")
    if labels:
        lacking = [c for c in labels if c not in raw.columns]
        if lacking:
            raise InputError(f"{csv}: missing label column(s) {', '.join(lacking)} (params.labels)")
    else:
        labels = [
            c
            for c in raw.columns
            if c not in reserved and pd.to_numeric(raw[c].replace("", pd.NA), errors="coerce").notna().all()
        ]
        if not labels:
            raise InputError(f"{csv}: no label column (a column of integers besides {', '.join(sorted(reserved))})")
    rel = raw[cols["path"]].str.strip()
    blank = rel == ""
    if blank.any():
        raise InputError(f"{csv}, line {int(blank.to_numpy().argmax()) + 2}: empty {cols['path']}")
    for i, p in enumerate(rel):
        if Path(p).suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(
                f"{csv}, line {i + 2}: {p} is not an image file (suffix must be one of {', '.join(IMAGE_SUFFIXES)})"
            )
    table = pd.DataFrame(
        {
            "image_id": raw[cols["image_id"]] if cols["image_id"] else [str(Path(p).with_suffix("")) for p in rel],
            "patient_id": "",
            "path": [p if Path(p).is_absolute() else str(root / p) for p in rel],
            "view": raw[cols["view"]].replace("", "unknown") if cols["view"] in raw.columns else "unknown",
        }
    )
    if cols["patient"] in raw.columns:
        table["patient_id"] = raw[cols["patient"]].str.strip()
        empty = table["patient_id"] == ""
        if empty.any():
            raise InputError(f"{csv}, line {int(empty.to_numpy().argmax()) + 2}: empty {cols['patient']}")
    else:
        table["patient_id"] = table["image_id"]
        print(f"WARNING: {csv} has no {cols['patient']} column: every image is its own patient", file=sys.stderr)
    for col in ("image_id", "path"):
        dup = table[col].duplicated()
        if dup.any():
            row = int(dup.to_numpy().argmax())
            raise InputError(f"{csv}, line {row + 2}: duplicate {col} {table.at[row, col]!r}")
    for col in labels:
        values = pd.to_numeric(raw[col].str.strip(), errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise InputError(f"{csv}, line {row + 2}: label {col} = {raw.at[row, col]!r} is not an integer")
        table[col] = values.astype("int64")
    if cols["split"]:
        split = raw[cols["split"]].str.strip().str.lower().map(_SPLITS)
        if split.isna().any():
            row = int(split.isna().to_numpy().argmax())
            raise InputError(
                f"{csv}, line {row + 2}: {cols['split']} = {raw.at[row, cols['split']]!r} is not train, val or test"
            )
        table["official_split"] = split
    if check_files:
        for i, p in enumerate(table["path"]):
            if not Path(p).is_file():
                raise InputError(f"{csv}, line {i + 2}: image {p} does not exist")
    print(
        f"{dataset}: {len(table)} images of {table['patient_id'].nunique()} patients, labels {', '.join(labels)}",
        file=sys.stderr,
    )
    return table


__all__ = ["IMAGE_SUFFIXES", "build_index"]
