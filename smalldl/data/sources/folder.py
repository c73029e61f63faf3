"""Bring your own data: a folder of PNG / JPEG / DICOM images plus a CSV describing them.

CSV (``params.csv``, default ``labels.csv`` in ``params.path``), one row per image, UTF-8 (Excel's BOM is
fine), separated by ``,``, ``;`` or tab (``params.delimiter``; default: told from the header line):

- ``path`` (``params.path_column``): the image file, relative to ``params.path`` (or absolute); it must lie
  inside the folder, symlinks resolved, unless ``params.allow_outside``;
- label columns: integers (0/1 for binary and multilabel tasks, class numbers for multiclass; -1 =
  uncertain: masked in the loss and AUC of multilabel tasks, the image left out of binary tasks on that
  label). ``params.labels`` names them (only those are read); by default every column that is not one of
  the named columns below nor listed in ``params.ignore_columns`` is a label, so a blank or ``yes`` in
  any of them is an error naming the cell rather than a column silently left out;
- optional ``patient_id`` (``params.patient_column``): without it every image is its own patient;
- optional ``view`` (``params.view_column``), ``image_id`` (``params.image_id_column``; default the path
  without its suffix, with it for files that share a name, e.g. ``a.png`` and ``a.jpg``) and a fixed test
  set (``params.split_column``: ``train``/``val``/``train_val`` or ``test``; tasks use it with
  ``test_split: official``).

The images are indexed where they are; nothing is copied. Every check runs here, before any image is
decoded; errors name the CSV, the line as an editor counts it (header = line 1) and the column.
"""

from __future__ import annotations

import contextlib
import csv as csvlib
import io
import os
import re
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from smalldl.data.dicom import SUFFIXES as DICOM_SUFFIXES
from smalldl.data.sources._listing import unchecked_plan
from smalldl.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)
DELIMITERS = (",", ";", "\t")
_SPLITS = {"train": "train_val", "val": "train_val", "train_val": "train_val", "test": "test"}
_INTEGER = re.compile(r"[+-]?\d{1,9}(?:\.0*)?")  # 1, -1, 1.0 (as Excel and pandas write them)


def _name(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def _fields(line: str, delimiter: str) -> list[str]:
    return [f.strip() for f in next(csvlib.reader([line], delimiter=delimiter), [])]


def detect_delimiter(header: str, path_column: str) -> str:
    """The delimiter of a CSV from its header line: of ``,`` ``;`` tab, the one whose fields include
    ``path_column``; if none or several do, the one that splits the header into the most fields (a tie: the
    first of , ; tab). A file that is not what this tells is stopped by the field count or column checks."""
    fields = {d: _fields(header, d) for d in DELIMITERS}
    with_path = [d for d in DELIMITERS if path_column in fields[d]]
    pool = with_path if len(with_path) == 1 else DELIMITERS
    return max(pool, key=lambda d: len(fields[d]))  # max keeps the first of equals


def read_labels_csv(
    csv: Path, path_column: str, delimiter: str | None = None, missing: str | None = None
) -> tuple[pd.DataFrame, list[int], str]:
    """The CSV as text columns ('' for blanks), each row's line number (as an editor counts: header = 1,
    a quoted line break counts) and the delimiter. Blank lines and lines of empty fields are skipped; a
    row with more or fewer fields than the header, an unnamed or repeated column, a file that is not UTF-8
    or not CSV is one InputError naming the line."""
    try:
        data = csv.read_bytes()
    except FileNotFoundError:
        raise InputError(missing or f"{csv} does not exist") from None
    except OSError as exc:
        raise InputError(f"{csv} cannot be read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{csv}, line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); save the CSV as UTF-8 "
            "(Excel: 'CSV UTF-8')"
        ) from None
    header_line = next((line for line in io.StringIO(text, newline="") if line.strip(" \t\r\n,;")), None)
    if header_line is None:
        raise InputError(f"{csv} is empty: expected a header line naming the columns ({path_column}, labels, ...)")
    delimiter = delimiter or detect_delimiter(header_line, path_column)
    reader = csvlib.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    end = 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if not any(f.strip() for f in record):
                continue
            if header is None:
                header, header_at = [f.strip() for f in record], start
                continue
            if len(record) != len(header):
                raise InputError(
                    f"{csv}, line {start}: {len(record)} fields, the header (line {header_at}) has {len(header)} "
                    f"(read as {_name(delimiter)}-separated)"
                )
            rows.append(record)
            lines.append(start)
    except csvlib.Error as exc:
        raise InputError(f"{csv}, line {reader.line_num}: not readable as CSV: {exc}") from None
    assert header is not None  # the header line has a non-blank character
    for i, name in enumerate(header):
        if not name:
            raise InputError(
                f"{csv}, line {header_at}: column {i + 1} has no name (read as {_name(delimiter)}-separated): "
                "name it or delete it"
            )
        if name in header[:i]:
            raise InputError(f"{csv}, line {header_at}: column {name!r} appears twice")
    return pd.DataFrame(rows, columns=header, dtype=str), lines, delimiter


def _label_values(raw: pd.DataFrame, col: str, lines: list[int], csv: Path, hint: str) -> pd.Series:
    """A label column as int64; the first cell that is not an integer is an InputError naming it."""
    cells = raw[col].str.strip()
    for i, cell in enumerate(cells):
        if not _INTEGER.fullmatch(cell):
            what = "is blank: write -1 for uncertain" if cell == "" else f"= {raw.at[i, col]!r} is not an integer"
            raise InputError(
                f"{csv}, line {lines[i]}, column {col}: label {what} (labels are 0/1 or class numbers, "
                f"-1 = uncertain){hint}"
            )
    return cells.map(lambda v: int(float(v))).astype("int64")


def build_index(params: Mapping[str, Any], dataset: str = "folder", check_files: bool = True) -> pd.DataFrame:
    if not params.get("path"):
        raise InputError(f"datasets.{dataset}.params.path is not set: the folder that holds your images")
    root = Path(params["path"])
    if not root.is_dir():
        raise InputError(f"datasets.{dataset}.params.path: folder {root} does not exist")
    csv = Path(params.get("csv") or "labels.csv")
    csv = csv if csv.is_absolute() else root / csv
    cols = {
        "path": params.get("path_column") or "path",
        "patient": params.get("patient_column") or "patient_id",
        "view": params.get("view_column") or "view",
        "image_id": params.get("image_id_column"),
        "split": params.get("split_column"),
    }
    raw, lines, delimiter = read_labels_csv(
        csv, cols["path"], params.get("delimiter"), missing=f"datasets.{dataset}.params.csv: {csv} does not exist"
    )
    if cols["path"] not in raw.columns:
        raise InputError(
            f"{csv}: missing column {cols['path']!r} (the image paths; params.path_column); the header, read as "
            f"{_name(delimiter)}-separated, has {', '.join(map(repr, raw.columns))} (params.delimiter sets it)"
        )
    for key in ("image_id", "split"):
        if cols[key] and cols[key] not in raw.columns:
            raise InputError(f"{csv}: missing column {cols[key]!r} (params.{key}_column)")
    reserved = [c for c in cols.values() if c]
    ignored = list(params.get("ignore_columns") or [])
    lacking = [c for c in ignored if c not in raw.columns]
    if lacking:
        raise InputError(f"{csv}: missing column(s) {', '.join(lacking)} (params.ignore_columns)")
    labels = params.get("labels")
    if labels:
        lacking = [c for c in labels if c not in raw.columns]
        if lacking:
            raise InputError(f"{csv}: missing label column(s) {', '.join(lacking)} (params.labels)")
        hint = ""
    else:
        labels = [c for c in raw.columns if c not in reserved and c not in ignored]
        if not labels:
            raise InputError(f"{csv}: no label column (a column of integers besides {', '.join(reserved)})")
        hint = (
            f"; every column besides {', '.join(reserved)} is read as a label: list the labels in params.labels, "
            "or give this column its role (params.image_id_column, params.split_column) or list it in "
            "params.ignore_columns"
        )
    if raw.empty:
        raise InputError(f"{csv}: no images (only a header line)")
    rel = raw[cols["path"]].str.strip()
    for i, p in enumerate(rel):
        if not p:
            raise InputError(f"{csv}, line {lines[i]}: empty {cols['path']}")
        if Path(p).suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(
                f"{csv}, line {lines[i]}: {p} is not an image file (suffix must be one of {', '.join(IMAGE_SUFFIXES)})"
            )
    paths = [p if Path(p).is_absolute() else str(root / p) for p in rel]
    real = [os.path.realpath(p) for p in paths]  # symlinks and .. resolved: what is actually read
    if not params.get("allow_outside"):
        inside = os.path.realpath(root)
        for i, (p, r) in enumerate(zip(rel, real, strict=True)):
            if os.path.commonpath([inside, r]) != inside:
                raise InputError(
                    f"{csv}, line {lines[i]}: {p} is outside the folder {root} (params.path; it resolves to {r}): "
                    "move the image into the folder or set params.allow_outside: true"
                )
    table = pd.DataFrame(
        {
            "image_id": raw[cols["image_id"]].str.strip() if cols["image_id"] else derived_ids(rel),
            "patient_id": "",
            "path": paths,
            "view": raw[cols["view"]].replace("", "unknown") if cols["view"] in raw.columns else "unknown",
        }
    )
    if cols["image_id"]:
        empty = table["image_id"] == ""
        if empty.any():
            raise InputError(f"{csv}, line {lines[int(empty.to_numpy().argmax())]}: empty {cols['image_id']}")
    if cols["patient"] in raw.columns:
        table["patient_id"] = raw[cols["patient"]].str.strip()
        empty = table["patient_id"] == ""
        if empty.any():
            raise InputError(f"{csv}, line {lines[int(empty.to_numpy().argmax())]}: empty {cols['patient']}")
    else:
        table["patient_id"] = table["image_id"]
        print(f"WARNING: {csv} has no {cols['patient']} column: every image is its own patient", file=sys.stderr)
    _check_unique(table["image_id"], real, rel, lines, csv, derived=not cols["image_id"])
    for col in labels:
        table[col] = _label_values(raw, col, lines, csv, hint)
    if cols["split"]:
        split = raw[cols["split"]].str.strip().str.lower().map(_SPLITS)
        if split.isna().any():
            row = int(split.isna().to_numpy().argmax())
            raise InputError(
                f"{csv}, line {lines[row]}: {cols['split']} = {raw.at[row, cols['split']]!r} is not train, val or test"
            )
        table["official_split"] = split
    if check_files:
        for i, p in enumerate(table["path"]):
            if not Path(p).is_file():
                raise InputError(f"{csv}, line {lines[i]}: image {p} does not exist")
    print(
        f"{dataset}: {len(table)} images of {table['patient_id'].nunique()} patients, labels {', '.join(labels)}",
        file=sys.stderr,
    )
    table.attrs["source"] = str(csv)  # named by a task whose label is not a column of it
    return table


def derived_ids(rel: pd.Series) -> list[str]:
    """Image ids from the CSV's paths: the path without its suffix (``scans/0001``), stable as long as no
    two different files share it; files that do (``a.png`` and ``a.jpg``) keep their suffix (``a.png``)."""
    stems = [str(Path(p).with_suffix("")) for p in rel]
    files = defaultdict(set)
    for p, stem in zip(rel, stems, strict=True):
        files[stem].add(str(Path(p)))
    return [str(Path(p)) if len(files[stem]) > 1 else stem for p, stem in zip(rel, stems, strict=True)]


def _check_unique(ids: pd.Series, real: list[str], rel: pd.Series, lines: list[int], csv: Path, derived: bool) -> None:
    """No image id twice and no file listed twice (under any spelling or link); else one InputError naming
    both lines."""
    first_id: dict[str, int] = {}
    first_file: dict[str, int] = {}
    for i, (image_id, r) in enumerate(zip(ids, real, strict=True)):
        if image_id in first_id:
            j = first_id[image_id]
            if real[j] == r:
                why = f"both list {rel[i]}: an image listed twice"
            elif derived:
                why = (
                    f"derived from {rel[j]} and {rel[i]}: give every image an id in a column named by "
                    "params.image_id_column"
                )
            else:
                why = "two images cannot share an id"
            raise InputError(
                f"{csv}, line {lines[i]}: duplicate image_id {image_id!r} (line {lines[j]} has it too; {why})"
            )
        if r in first_file:
            j = first_file[r]
            raise InputError(
                f"{csv}, line {lines[i]}: {rel[i]} is the file of line {lines[j]} ({rel[j]}) too: an image listed twice"
            )
        first_id[image_id] = i
        first_file[r] = i


plan_index = unchecked_plan(build_index)


def index_files(dataset: str, params: Mapping[str, Any]) -> list[Path]:
    """The CSV and every image it lists (none without ``params.path``; only the CSV when it cannot be read:
    the index job says why, naming the line)."""
    if not params.get("path"):
        return []
    root = Path(params["path"])
    csv = Path(params.get("csv") or "labels.csv")
    csv = csv if csv.is_absolute() else root / csv
    files = [csv]
    column = params.get("path_column") or "path"
    with contextlib.suppress(InputError):
        raw, _, _ = read_labels_csv(csv, column, params.get("delimiter"))
        if column in raw.columns:
            files += [Path(rel) if Path(rel).is_absolute() else root / rel for rel in raw[column].str.strip() if rel]
    return files


__all__ = [
    "DELIMITERS",
    "IMAGE_SUFFIXES",
    "build_index",
    "derived_ids",
    "detect_delimiter",
    "index_files",
    "plan_index",
    "read_labels_csv",
]
