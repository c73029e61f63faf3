"""The uniform index table: one row per image (image_id, patient_id, path, view, label columns)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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
        raise InputError(f"{where}: label column(s) {', '.join(missing)} not in the index")
    for col in labels:
        values = pd.to_numeric(index[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(bad.idxmax())
            raise InputError(f"{where}: label {col} of image {index.at[row, 'image_id']!r} is not a number")
