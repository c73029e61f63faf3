"""The uniform index table: one row per image (image_id, patient_id, path, view, label columns).

Optional columns an adapter may add: ``official_split`` (``train_val`` / ``test``: a dataset's fixed test
set, used by tasks with ``test_split: official``), ``study_id``, ``study_type``, ``body_part``. Label
values are integers; -1 marks an uncertain label: multilabel tasks mask it (loss and AUC), binary tasks
on it leave the image out.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from smalldl.data import kinds
from smalldl.errors import InputError

REQUIRED = ("image_id", "patient_id", "path", "view")


def read_raw_index(csv_path: str | Path, root: str | Path | None = None, check_files: bool = True) -> pd.DataFrame:
    """Read an adapter's index CSV, check it, and make ``path`` relative to the working directory.

    ``root`` is the folder that the CSV's paths are relative to (default: the CSV's folder).
    Raises InputError naming the file and row for a missing column, duplicate id or missing image.
    """
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    try:
        table = pd.read_csv(csv_path, dtype={"image_id": str, "patient_id": str, "path": str, "view": str})
    except FileNotFoundError:
        raise InputError(f"index file {csv_path} does not exist") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"index file {csv_path} is not a readable CSV: {exc}") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise InputError(f"index file {csv_path}: missing column(s) {', '.join(missing)}")
    for col in REQUIRED:
        blank = table[col].isna()
        if blank.any():
            row = int(blank.idxmax()) + 2  # header is line 1
            raise InputError(f"index file {csv_path}, line {row}: empty {col}")
    dup = table["image_id"].duplicated()
    if dup.any():
        row = int(dup.idxmax())
        raise InputError(f"index file {csv_path}, line {row + 2}: duplicate image_id {table.at[row, 'image_id']!r}")
    table["path"] = [str(root / p) for p in table["path"]]
    if check_files:
        for i, p in enumerate(table["path"]):
            if not Path(p).is_file():
                raise InputError(f"index file {csv_path}, line {i + 2}: image {p} does not exist")
    return table.reset_index(drop=True)


def check_labels(index: pd.DataFrame, labels: list[str], where: str) -> None:
    """Every label column exists and holds integers (0/1 for binary and multilabel)."""
    missing = [c for c in labels if c not in index.columns]
    if missing:
        import difflib

        have = [c for c in index.columns if c not in (*REQUIRED, "official_split")]
        source = index.attrs.get("source")
        of = f"a column of {source}" if source else "in the index"
        close = difflib.get_close_matches(missing[0], have, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InputError(
            f"{where}: label column(s) {', '.join(missing)} not {of}{hint}; its label columns: "
            f"{', '.join(have) or 'none'}"
        )
    for col in labels:
        values = pd.to_numeric(index[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(bad.idxmax())
            raise InputError(f"{where}: label {col} of image {index.at[row, 'image_id']!r} is not a number")


def check_index(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """The uniform columns exist, have no blanks, image ids are unique; ids as strings."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise InputError(f"{where}: missing column(s) {', '.join(missing)}")
    for col in REQUIRED:
        blank = table[col].isna() | (table[col].astype(str).str.strip() == "")
        if blank.any():
            raise InputError(f"{where}: image {table['image_id'][blank].iloc[0]!r} has an empty {col}")
    dup = table["image_id"].duplicated()
    if dup.any():
        raise InputError(f"{where}: duplicate image_id {table['image_id'][dup].iloc[0]!r}")
    if table.empty:
        raise InputError(f"{where}: no images")
    source = table.attrs.get("source")
    table = table.reset_index(drop=True)
    if source:
        table.attrs["source"] = source  # the file its labels come from, kept in the parquet (check_labels)
    for col in ("image_id", "patient_id", "path", "view"):
        table[col] = table[col].astype(str)
    return table


def build_index(
    dataset: str,
    spec: Mapping[str, Any],
    raw: str | Path | None = None,
    fetched: str | Path | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """The index of any dataset kind, by how its raw data is made (smalldl.data.kinds): a generated one
    from ``raw``/index.csv, a fetched one by its adapter from the ``fetched`` record, one read in place by
    its adapter from its params."""
    kind = kinds.kind(spec["kind"], f"datasets.{dataset}.kind")
    params = dict(spec.get("params") or {})
    if kind.raw == "generate":
        if raw is None:
            raise InputError(f"dataset {dataset}: a synthetic dataset needs its raw folder")
        table = read_raw_index(Path(raw) / "index.csv", check_files=check_files)
    elif kind.raw == "fetch":
        if fetched is None:
            raise InputError(f"dataset {dataset}: {kind.public or kind.name} needs the fetch step's record")
        table = importlib.import_module(kind.adapter).build_index(fetched, check_files=check_files)
    else:
        table = importlib.import_module(kind.adapter).build_index(params, dataset=dataset, check_files=check_files)
    table = check_index(table, f"dataset {dataset}")
    print(f"index {dataset}: {len(table)} images of {table['patient_id'].nunique()} patients", file=sys.stderr)
    return table
