"""MURA v1.1 (Rajpurkar et al. 2018), from a local copy.

Layout: ``MURA-v1.1/{train,valid}/XR_<BODYPART>/patientNNNNN/studyK_{positive,negative}/imageJ.png`` plus
``train_image_paths.csv`` / ``valid_image_paths.csv`` (one relative path a line, no header). Everything
comes from the path: the label (``abnormal`` = 1 for a ``_positive`` study), the body part, the patient
and the study. ``official_split`` is ``train_val`` for ``train/`` and ``test`` for ``valid/`` (MURA's test
set is not public). Without the CSVs the folders are walked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from smalldl.data.sources._listing import check_listed_images, unchecked_plan
from smalldl.errors import InputError

STUDY_TYPES = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
SPLITS = {"train": "train_val", "valid": "test"}
PAGE = "https://stanfordmlgroup.github.io/competitions/mura/"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_root(path: str | Path, dataset: str = "mura") -> Path:
    path = Path(path)
    for c in (path, path / "MURA-v1.1"):
        if (c / "train_image_paths.csv").is_file() or (c / "train").is_dir() or (c / "valid").is_dir():
            return c
    raise InputError(
        f"datasets.{dataset}.params.path: no MURA-v1.1 folder at {path} (expected train_image_paths.csv or "
        f"train/ in it or in MURA-v1.1/ below it). Register at {PAGE}, download MURA-v1.1 and set path."
    )


def parse_path(rel: str, where: str) -> dict[str, Any]:
    """``[MURA-v1.1/]train/XR_WRIST/patient00001/study1_positive/image1.png`` -> the row's fields."""
    parts = PurePosixPath(rel.strip()).parts
    if parts and parts[0].startswith("MURA"):
        parts = parts[1:]
    if len(parts) != 5 or parts[0] not in SPLITS:
        raise InputError(f"{where}: {rel!r} is not <train|valid>/XR_<PART>/patientNNNNN/studyK_<label>/<image>")
    split, study_type, patient, study, _image = parts
    if study_type not in STUDY_TYPES:
        raise InputError(f"{where}: {rel!r}: unknown study type {study_type!r} ({', '.join(STUDY_TYPES)})")
    if not patient.startswith("patient"):
        raise InputError(f"{where}: {rel!r}: {patient!r} is not a patient folder")
    label = study.rsplit("_", 1)[-1]
    if label not in ("positive", "negative"):
        raise InputError(f"{where}: {rel!r}: study folder {study!r} ends in neither _positive nor _negative")
    return {
        "image_id": "/".join(parts),
        "patient_id": patient,
        "view": study_type,
        "study_id": "/".join(parts[1:4]),
        "study_type": study_type,
        "body_part": study_type.removeprefix("XR_"),
        "official_split": SPLITS[split],
        "abnormal": int(label == "positive"),
    }


def _listed(root: Path, split: str) -> list[tuple[str, str]]:
    csv = root / f"{split}_image_paths.csv"
    if csv.is_file():
        lines = [ln.strip() for ln in csv.read_text().splitlines()]
        return [(ln, f"{csv}, line {i + 1}") for i, ln in enumerate(lines) if ln]
    folder = root / split
    if not folder.is_dir():
        return []
    found = []
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."):
                rel = Path(dirpath, f).relative_to(root).as_posix()
                found.append((rel, str(Path(dirpath, f))))
    return sorted(found)


def build_index(params: Mapping[str, Any], dataset: str = "mura", check_files: bool = True) -> pd.DataFrame:
    """The uniform index of a local MURA v1.1 copy."""
    if not params.get("path"):
        raise InputError(f"datasets.{dataset}.params.path is not set: download MURA-v1.1 from {PAGE} and set it")
    root = find_root(params["path"], dataset)
    rows = []
    for split in params.get("splits", ["train", "valid"]):
        for rel, where in _listed(root, split):
            row = parse_path(rel, where)
            row["path"] = str(root.joinpath(*PurePosixPath(row["image_id"]).parts))
            rows.append(row)
    if not rows:
        raise InputError(f"dataset {dataset}: no MURA images found in {root}")
    table = pd.DataFrame(rows)
    table = table[
        ["image_id", "patient_id", "path", *[c for c in table.columns if c not in ("image_id", "patient_id", "path")]]
    ]
    check_listed_images(table, dataset, root, check_files)
    print(
        f"{dataset}: {len(table)} images, {table['study_id'].nunique()} studies, {table['patient_id'].nunique()} "
        f"patients, {int(table['abnormal'].sum())} abnormal, from {root}",
        file=sys.stderr,
    )
    return table.reset_index(drop=True)


plan_index = unchecked_plan(build_index)


def index_files(dataset: str, params: Mapping[str, Any]) -> list[Path]:
    """The image path lists the index is read from (none without ``params.path``)."""
    if not params.get("path"):
        return []
    root = find_root(params["path"], dataset)
    return [root / f"{s}_image_paths.csv" for s in params.get("splits", ["train", "valid"])]


__all__ = ["STUDY_TYPES", "build_index", "index_files", "parse_path", "plan_index"]
