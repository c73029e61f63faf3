"""CheXpert v1.0 (Irvin et al. 2019), full or "small" layout, from a local copy (registration needed).

The user's folder is ``CheXpert-v1.0/`` or ``CheXpert-v1.0-small/`` (with ``train.csv``, ``valid.csv``,
``train/``, ``valid/``) or the folder above it. The CSVs hold one row per image, paths starting with the
release folder's name, and per observation one of ``1.0`` (positive), ``0.0`` (negative), ``-1.0``
(uncertain) or blank (not mentioned).

Label rules, identical for every class and not configurable where the paper's code went wrong:

- blank (not mentioned) -> 0. Always. A blank is never a positive.
- ``-1.0`` (uncertain) -> the class's policy: ``ones`` (1), ``zeros`` (0) or ``ignore`` (-1 in the index:
  a multilabel task masks that label of that image, out of the loss and out of the label's AUC; a
  binary task on that class leaves the image out; see the task key ``uncertain``).

Only frontal images are kept (``Frontal/Lateral == Frontal``); ``view`` is the ``AP/PA`` column.
``official_split`` is ``train_val`` for ``train.csv`` and ``test`` for ``valid.csv`` (the radiologist-
labelled validation set).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.data.sources._listing import check_listed_images, read_text_csv, unchecked_plan
from smalldl.errors import InputError

#: The 14 observations, in the CSV's order.
OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
#: The 5 competition classes the paper pretrains on.
CLASSES5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
#: Default uncertain policy: U-Ones where the CheXpert paper found ones best (Atelectasis, Edema), U-Zeros
#: elsewhere. ``params.uncertain`` overrides per class; ``params.uncertain_default`` for the rest.
DEFAULT_UNCERTAIN = {
    "Atelectasis": "ones",
    "Cardiomegaly": "zeros",
    "Consolidation": "zeros",
    "Edema": "ones",
    "Pleural Effusion": "zeros",
}
POLICIES = ("ones", "zeros", "ignore")
LAYOUTS = {"v1.0": "CheXpert-v1.0", "v1.0-small": "CheXpert-v1.0-small"}
CSVS = {"train": ("train.csv", "train_val"), "valid": ("valid.csv", "test")}
REGISTER = "https://stanfordmlgroup.github.io/competitions/chexpert/"


def find_root(path: str | Path, version: str = "auto", dataset: str = "chexpert") -> Path:
    """The release folder (the one holding train.csv) given it or its parent."""
    path = Path(path)
    names = list(LAYOUTS.values()) if version == "auto" else [LAYOUTS[version]]
    candidates = [path] + [path / n for n in names]
    for c in candidates:
        if (c / "train.csv").is_file() or (c / "valid.csv").is_file():
            return c
    raise InputError(
        f"datasets.{dataset}.params.path: no CheXpert train.csv in {path} or {' / '.join(names)} below it. "
        f"Register at {REGISTER}, download {' or '.join(names)}, unpack it and point path at the folder."
    )


def policies(params: Mapping[str, Any]) -> dict[str, str]:
    """Uncertain policy for each observation (config overrides, then defaults)."""
    default = params.get("uncertain_default", "zeros")
    out = {c: DEFAULT_UNCERTAIN.get(c, default) for c in OBSERVATIONS}
    for cls, pol in (params.get("uncertain") or {}).items():
        if cls not in OBSERVATIONS:
            raise InputError(f"datasets.*.params.uncertain: unknown CheXpert class {cls!r} ({', '.join(OBSERVATIONS)})")
        if pol not in POLICIES:
            raise InputError(f"datasets.*.params.uncertain.{cls}: {pol!r} is not one of {', '.join(POLICIES)}")
        out[cls] = pol
    return out


_VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": 0}


def encode_labels(raw: pd.Series, policy: str, where: str) -> np.ndarray:
    """One observation column of strings -> int labels. Blank -> 0 always; -1 -> the policy's value."""
    codes, uniques = pd.factorize(raw.fillna(""), use_na_sentinel=False)
    lookup = np.array([_VALUES.get(str(u).strip(), 9) for u in uniques], dtype=np.int64)
    out = lookup[codes]
    if (out == 9).any():
        row = int((out == 9).argmax())
        raise InputError(f"{where}, line {row + 2}: {raw.name} = {raw.iloc[row]!r} is not 1, 0, -1 or blank")
    out[out == -1] = {"ones": 1, "zeros": 0, "ignore": -1}[policy]
    return out


def table_from_csv(
    csv: str | Path, policy: Mapping[str, str], root: Path | None, official: str, frontal_only: bool = True
) -> pd.DataFrame:
    """One CheXpert CSV -> uniform index rows (paths under ``root``; labels per the uncertain policy)."""
    csv = Path(csv)
    raw = read_text_csv(csv)
    need = ["Path", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]
    lacking = [c for c in need if c not in raw.columns]
    if lacking:
        raise InputError(f"{csv}: missing column(s) {', '.join(lacking)}")
    labels = {c: encode_labels(raw[c], policy[c], str(csv)) for c in OBSERVATIONS}
    split_paths = [p.strip("/").split("/") for p in raw["Path"]]
    parts = [p[1:] if p[0].startswith("CheXpert") else p for p in split_paths]
    bad = [i for i, p in enumerate(parts) if len(p) < 4 or not p[1].startswith("patient")]
    if bad:
        raise InputError(f"{csv}, line {bad[0] + 2}: path {raw['Path'].iloc[bad[0]]!r} is not <split>/patientNNNNN/...")
    image_id = ["/".join(p) for p in parts]
    table = pd.DataFrame(
        {
            "image_id": image_id,
            "patient_id": [p[1] for p in parts],
            "path": [str(root.joinpath(*p)) if root is not None else "/".join(p) for p in parts],
            "view": raw["AP/PA"].replace("", "unknown"),
            "study_id": ["/".join(p[1:3]) for p in parts],
            "official_split": official,
            **labels,
        }
    )
    if frontal_only:
        table = table[raw["Frontal/Lateral"].to_numpy() == "Frontal"]
    return table.reset_index(drop=True)


def build_index(params: Mapping[str, Any], dataset: str = "chexpert", check_files: bool = True) -> pd.DataFrame:
    """The uniform index of a local CheXpert copy (``params``: path, version, splits, uncertain...)."""
    if not params.get("path"):
        raise InputError(
            f"datasets.{dataset}.params.path is not set: register at {REGISTER}, download CheXpert and set it"
        )
    root = find_root(params["path"], params.get("version", "auto"), dataset)
    pol = policies(params)
    parts = []
    for split in params.get("splits", ["train", "valid"]):
        name, official = CSVS[split]
        parts.append(table_from_csv(root / name, pol, root, official, params.get("frontal_only", True)))
    table = pd.concat(parts, ignore_index=True)
    check_listed_images(table, dataset, root, check_files)
    print(
        f"{dataset}: {len(table)} frontal images of {table['patient_id'].nunique()} patients from {root}; "
        f"uncertain policy {', '.join(f'{c}={pol[c]}' for c in CLASSES5)}",
        file=sys.stderr,
    )
    return table


plan_index = unchecked_plan(build_index)


def index_files(dataset: str, params: Mapping[str, Any]) -> list[Path]:
    """The split CSVs the index is read from (none without ``params.path``)."""
    if not params.get("path"):
        return []
    root = find_root(params["path"], params.get("version", "auto"), dataset)
    return [root / CSVS[s][0] for s in params.get("splits", ["train", "valid"])]


__all__ = [
    "CLASSES5",
    "DEFAULT_UNCERTAIN",
    "OBSERVATIONS",
    "build_index",
    "encode_labels",
    "index_files",
    "plan_index",
    "table_from_csv",
]
