"""NIH ChestX-ray14 (Wang et al. 2017): download or verify, then the uniform index.

Files of the release (https://nihcc.app.box.com/v/ChestXray-NIHCC): 12 image archives
``images_001.tar.gz`` ... ``images_012.tar.gz`` (112,120 frontal PNGs, 1024x1024, under ``images/``),
``Data_Entry_2017_v2020.csv`` (labels), ``BBox_List_2017.csv`` (boxes of 984 findings) and the official,
patient-disjoint ``train_val_list.txt`` (86,524 images) / ``test_list.txt`` (25,596 images).

Checksums (``FILES``):

- archives: the MD5s the NIH publishes in ``FAQ_CHESTXRAY.pdf`` (question Q07) next to the data; sizes as
  the NIH's server reports them (Content-Range totals).
- metadata: SHA-256 and size of the files on the NIH's Box folder (file ids in the URLs). The copy of
  ``Data_Entry_2017_v2020.csv`` that circulates in mirrors (and in the torchxrayvision wheel) differs from
  the NIH's in one header word (``Patient Gender`` for ``Patient Sex``; every row identical, 9,003,499
  bytes): it is accepted too. Other copies can be accepted with ``params.checksums``.

A user with a local copy sets ``params.path``: archives found there are checked and extracted next to
themselves, extracted images (``images/``, or Kaggle's ``images_0NN/images/``) are indexed where they
are; nothing is copied.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from smalldl import layout
from smalldl.data.download import download, safe_extract, verify_file
from smalldl.data.sources._listing import read_text_csv
from smalldl.errors import InputError

PAGE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
_STATIC = "https://nihcc.box.com/shared/static/{}.gz"
_BOX_FILE = "https://nihcc.app.box.com/index.php?rm=box_download_shared_file&vanity_name=ChestXray-NIHCC&file_id=f_{}"

#: The 14 findings in the standard order (Wang et al. 2017; CheXNet; torchxrayvision).
LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
ENTRY = "Data_Entry_2017_v2020.csv"
BBOX = "BBox_List_2017.csv"
TRAIN_VAL = "train_val_list.txt"
TEST = "test_list.txt"
METADATA = (ENTRY, BBOX, TRAIN_VAL, TEST)
N_IMAGES = 112_120


@dataclass(frozen=True)
class Remote:
    url: str
    size: int | None
    checksums: tuple[str, ...]


#: name -> default URL, size and accepted checksums (any one matches).
FILES: dict[str, Remote] = {
    "images_001.tar.gz": Remote(
        _STATIC.format("vfk49d74nhbxq3nqjg0900w5nvkorp5c"), 2008470987, ("md5:fe8ed0a6961412fddcbb3603c11b3698",)
    ),
    "images_002.tar.gz": Remote(
        _STATIC.format("i28rlmbvmfjbl8p2n3ril0pptcmcu9d1"), 3952623504, ("md5:ab07a2d7cbe6f65ddd97b4ed7bde10bf",)
    ),
    "images_003.tar.gz": Remote(
        _STATIC.format("f1t00wrtdk94satdfb9olcolqx20z2jp"), 3929234850, ("md5:2301d03bde4c246388bad3876965d574",)
    ),
    "images_004.tar.gz": Remote(
        _STATIC.format("0aowwzs5lhjrceb3qp67ahp0rd1l1etg"), 3838903983, ("md5:9f1b7f5aae01b13f4bc8e2c44a4b8ef6",)
    ),
    "images_005.tar.gz": Remote(
        _STATIC.format("v5e3goj22zr6h8tzualxfsqlqaygfbsn"), 3935496531, ("md5:1861f3cd0ef7734df8104f2b0309023b",)
    ),
    "images_006.tar.gz": Remote(
        _STATIC.format("asi7ikud9jwnkrnkj99jnpfkjdes7l6l"), 3986301172, ("md5:456b53a8b351afd92a35bc41444c58c8",)
    ),
    "images_007.tar.gz": Remote(
        _STATIC.format("jn1b4mw4n6lnh74ovmcjb8y48h8xj07n"), 4016328426, ("md5:1075121ea20a137b87f290d6a4a5965e",)
    ),
    "images_008.tar.gz": Remote(
        _STATIC.format("tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j"), 4018347353, ("md5:b61f34cec3aa69f295fbb593cbd9d443",)
    ),
    "images_009.tar.gz": Remote(
        _STATIC.format("upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj"), 4111327929, ("md5:442a3caa61ae9b64e61c561294d1e183",)
    ),
    "images_010.tar.gz": Remote(
        _STATIC.format("l6nilvfa9cg3s28tqv1qc1olm3gnz54p"), 4181556296, ("md5:09ec81c4c31e32858ad8cf965c494b74",)
    ),
    "images_011.tar.gz": Remote(
        _STATIC.format("hhq8fkdgvcari67vfhs7ppg2w6ni4jze"), 4187084020, ("md5:499aefc67207a5a97692424cf5dbeed5",)
    ),
    "images_012.tar.gz": Remote(
        _STATIC.format("ioqwiy20ihqwyr8pf4c24eazhh281pbu"), 2914187733, ("md5:dc9fda1757c2de0032b63347a7d2895c",)
    ),
    ENTRY: Remote(
        _BOX_FILE.format("219760887468"),
        None,  # two accepted copies of different sizes (see the module docstring)
        (
            "sha256:c69a6daca3549af707ca9cacbdf9f9a7b6a9188e8c61157df653520bb72d8eb1",  # NIH, 9,003,496 bytes
            "sha256:dc1d2df67fdc1c5a7601d48699cda2b13dc2c4841488b4183dcf04884dbaca11",  # mirrors, 9,003,499 bytes
        ),
    ),
    BBOX: Remote(
        _BOX_FILE.format("219760940956"),
        92416,
        ("sha256:0bbfea9d4c4e9771481b3023b1bc9f0df9dea924453b12986beb29b0c4d0c95b",),
    ),
    TRAIN_VAL: Remote(
        _BOX_FILE.format("256056636701"),
        1470907,
        ("sha256:61fbe896321c1c1c8b75f3e4f3a08e4fef6486d95ef8a667c31d4d60dca6cb81",),
    ),
    TEST: Remote(
        _BOX_FILE.format("256055473534"),
        435131,
        ("sha256:38ca5ef7f756092946f57c1a59faca882ed589a1ab1f72590b45dc06c6d5e1cc",),
    ),
}
ARCHIVES = tuple(sorted(n for n in FILES if n.startswith("images_")))


def remote_files(params: Mapping[str, Any]) -> dict[str, Remote]:
    """FILES with the config's overrides: ``base_url`` (a mirror), ``urls`` and ``checksums`` per file.

    A checksum given in the config replaces the recorded ones and the recorded size.
    """
    out = dict(FILES)
    base = params.get("base_url")
    urls = params.get("urls") or {}
    sums = params.get("checksums") or {}
    for name in list(urls) + list(sums):
        if name not in FILES:
            raise InputError(f"datasets.*.params: {name!r} is not a file of the release ({', '.join(FILES)})")
    for name, remote in FILES.items():
        url = urls.get(name) or (f"{base.rstrip('/')}/{name}" if base else remote.url)
        if name in sums:
            given = sums[name]
            out[name] = Remote(url, None, tuple(given) if isinstance(given, list | tuple) else (given,))
        else:
            out[name] = Remote(url, remote.size, remote.checksums)
    return out


def image_dirs(root: Path) -> list[Path]:
    """Folders that hold the PNGs: ``images/`` (the release), ``images_0NN/images/`` (Kaggle), the root."""
    found = []
    if (root / "images").is_dir():
        found.append(root / "images")
    found += sorted(p / "images" for p in root.glob("images_*") if (p / "images").is_dir())
    return found or [root]


def scan_images(dirs: list[Path]) -> dict[str, str]:
    """File name -> path of every PNG in ``dirs`` (first folder wins)."""
    out: dict[str, str] = {}
    for d in dirs:
        with os.scandir(d) as it:
            for entry in it:
                if entry.name.endswith(".png") and entry.name not in out:
                    out[entry.name] = os.path.join(d, entry.name)
    return out


def _place_hint(root: Path, dataset: str) -> str:
    return (
        f"Download the files by hand from {PAGE} ({', '.join(METADATA)} and images_001.tar.gz ... "
        f"images_012.tar.gz, or their extracted images/ folder) and place them in {root}/, or set "
        f"datasets.{dataset}.params.path to a folder that holds them."
    )


def fetch(
    dataset: str,
    params: Mapping[str, Any],
    default_root: str | Path,
    out_json: str | Path,
    *,
    retries: int = 5,
    backoff: float = 2.0,
) -> dict[str, Any]:
    """Make ChestX-ray14 complete in one folder (download, or verify a local copy) and write ``out_json``.

    ``params``: ``path`` (local copy; default ``default_root``), ``download`` (fetch what is missing),
    ``base_url``/``urls``/``checksums`` (overrides), ``keep_archives``, ``timeout``.
    """
    from smalldl.utils import write_json

    Path(out_json).unlink(missing_ok=True)  # a stale record must not outlive a failed check
    local = params.get("path")
    root = Path(local) if local else Path(default_root)
    if local and not root.is_dir():
        raise InputError(f"datasets.{dataset}.params.path: folder {root} does not exist. {_place_hint(root, dataset)}")
    root.mkdir(parents=True, exist_ok=True)
    allow_download = bool(params.get("download", False))
    remotes = remote_files(params)
    timeout = float(params.get("timeout", 30))
    hint = _place_hint(root, dataset)
    files: dict[str, Any] = {}
    missing: list[str] = []

    def get(name: str) -> Path | None:
        remote = remotes[name]
        path = root / name
        if path.is_file():
            print(f"verify {path}", file=sys.stderr, flush=True)
            files[name] = {"checksum": verify_file(path, remote.size, remote.checksums), "source": "local"}
            return path
        if not allow_download:
            missing.append(name)
            return None
        matched = download(
            remote.url,
            path,
            size=remote.size,
            checksums=remote.checksums,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            offline_hint=hint,
        )
        files[name] = {"checksum": matched, "source": remote.url}
        return path

    for name in METADATA:
        get(name)
    expected = set(read_entries(root / ENTRY)["image_id"]) if (root / ENTRY).is_file() else None
    present = scan_images(image_dirs(root))
    complete = expected is not None and expected <= present.keys()
    if not complete:
        for name in ARCHIVES:
            marker = root / f".{name}.extracted"
            if marker.is_file():
                files[name] = json.loads(marker.read_text())
                continue
            path = get(name)
            if path is None:
                continue
            safe_extract(path, root)
            files[name]["extracted"] = True
            write_json(marker, files[name])
            if not local and not params.get("keep_archives", False):
                path.unlink()  # only in resources/raw/<dataset>/: a user's own folder is never pruned
    if missing and expected is not None and present and not set(missing) & set(METADATA):
        absent = sorted(expected - present.keys())
        raise InputError(
            f"dataset {dataset}: {len(absent)} image(s) listed in {root / ENTRY} are not under "
            f"{', '.join(str(d) for d in image_dirs(root))} (first: {absent[0]}), and the archives to extract "
            f"them from are not in {root} either (download is off). {hint}"
        )
    if missing:
        raise InputError(
            f"dataset {dataset}: {len(missing)} file(s) missing in {root}: {', '.join(missing)} (download is "
            f"off). {hint} Or set datasets.{dataset}.params.download: true."
        )
    dirs = image_dirs(root)
    present = scan_images(dirs)
    expected = set(read_entries(root / ENTRY)["image_id"])
    absent = sorted(expected - present.keys())
    if absent:
        raise InputError(
            f"dataset {dataset}: {len(absent)} image(s) listed in {root / ENTRY} are not under "
            f"{', '.join(str(d) for d in dirs)} (first: {absent[0]}). {hint}"
        )
    info = {
        "dataset": dataset,
        "kind": "nih",
        "root": str(root),
        "image_dirs": [str(d) for d in dirs],
        "images": len(expected),
        "files": files,
    }
    write_json(out_json, info)
    print(f"{dataset}: {len(expected)} images verified in {root}", file=sys.stderr)
    return info


# ----------------------------------------------------------------------------------------------- index


def read_entries(csv: str | Path) -> pd.DataFrame:
    """``Data_Entry_2017_v2020.csv`` -> image_id, patient_id, view and the 14 labels (0/1), checked."""
    csv = Path(csv)
    raw = read_text_csv(csv)
    need = ["Image Index", "Finding Labels", "Patient ID", "View Position"]
    lacking = [c for c in need if c not in raw.columns]
    if lacking:
        raise InputError(f"{csv}: missing column(s) {', '.join(lacking)}")
    for col in need:
        blank = raw[col].str.strip() == ""
        if blank.any():
            raise InputError(f"{csv}, line {int(blank.to_numpy().argmax()) + 2}: empty {col}")
    dup = raw["Image Index"].duplicated()
    if dup.any():
        row = int(dup.to_numpy().argmax())
        raise InputError(f"{csv}, line {row + 2}: duplicate image {raw.at[row, 'Image Index']!r}")
    found = raw["Finding Labels"].str.get_dummies(sep="|")
    unknown = [c for c in found.columns if c not in LABELS and c != NO_FINDING]
    if unknown:
        row = int(found[unknown[0]].to_numpy().argmax())
        raise InputError(f"{csv}, line {row + 2}: unknown finding {unknown[0]!r} (known: {', '.join(LABELS)})")
    pid = pd.to_numeric(raw["Patient ID"], errors="coerce")
    if pid.isna().any():
        row = int(pid.isna().to_numpy().argmax())
        raise InputError(f"{csv}, line {row + 2}: Patient ID {raw.at[row, 'Patient ID']!r} is not a number")
    table = pd.DataFrame(
        {
            "image_id": raw["Image Index"],
            "patient_id": pid.astype("int64").astype(str),
            "view": raw["View Position"],
        }
    )
    for label in LABELS:
        table[label] = found[label].astype("int64") if label in found.columns else 0
    return table


def read_list(path: str | Path) -> list[str]:
    path = Path(path)
    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    return lines


def official_split(table: pd.DataFrame, train_val: list[str], test: list[str], where: str) -> pd.Series:
    """'train_val' / 'test' for every image of ``table``; InputError naming an image in both or neither."""
    both = set(train_val) & set(test)
    if both:
        raise InputError(f"{where}: image {sorted(both)[0]} is in both {TRAIN_VAL} and {TEST}")
    known = set(table["image_id"])
    for name, items in ((TRAIN_VAL, train_val), (TEST, test)):
        extra = [i for i in items if i not in known]
        if extra:
            raise InputError(f"{where}: {name} lists image {extra[0]} that {ENTRY} does not have")
    split = pd.Series(pd.NA, index=table.index, dtype="object")
    ids = table["image_id"]
    split[ids.isin(set(train_val))] = "train_val"
    split[ids.isin(set(test))] = "test"
    if split.isna().any():
        raise InputError(f"{where}: image {ids[split.isna()].iloc[0]} is in neither {TRAIN_VAL} nor {TEST}")
    return split


def build_index(fetched_json: str | Path, check_files: bool = True) -> pd.DataFrame:
    """The uniform index from a folder ``fetch`` verified: paths, labels and the official split."""
    info = json.loads(Path(fetched_json).read_text())
    root = Path(info["root"])
    table = read_entries(root / ENTRY)
    table["official_split"] = official_split(
        table, read_list(root / TRAIN_VAL), read_list(root / TEST), f"dataset {info['dataset']} ({root})"
    )
    present = scan_images([Path(d) for d in info["image_dirs"]])
    paths = table["image_id"].map(present)
    if check_files and paths.isna().any():
        raise InputError(f"{root / ENTRY}: image {table['image_id'][paths.isna()].iloc[0]} does not exist")
    table.insert(2, "path", paths.fillna(""))
    return table


def _metadata_root(dataset: str, params: Mapping[str, Any]) -> Path:
    """Where fetch verifies (and reads) the metadata: the local copy (``params.path``), or
    resources/raw/<dataset>/ where it downloads them."""
    return Path(params.get("path") or f"{layout.RAW}/{dataset}")


def plan_index(dataset: str, params: Mapping[str, Any], seed: int) -> pd.DataFrame | str:
    """The index :func:`build_index` will make, from the metadata alone (paths are the image ids), or why it
    cannot be made yet: the metadata not there (the registry's interface: smalldl.data.kinds)."""
    root = _metadata_root(dataset, params)
    missing = [f for f in (ENTRY, TRAIN_VAL, TEST) if not (root / f).is_file()]
    if missing:
        return f"the ChestX-ray14 metadata ({', '.join(missing)}) is not in {root} yet"
    table = read_entries(root / ENTRY)
    table["official_split"] = official_split(
        table, read_list(root / TRAIN_VAL), read_list(root / TEST), f"dataset {dataset} ({root})"
    )
    table["path"] = table["image_id"]
    return table


def index_files(dataset: str, params: Mapping[str, Any]) -> list[Path]:
    """The entries and list files, where fetch verified them (its record's root): the local copy, or
    resources/raw/<dataset>/ where it downloaded them (its output is only the record: a metadata file replaced later
    is this input)."""
    root = _metadata_root(dataset, params)
    return [root / f for f in (ENTRY, TRAIN_VAL, TEST)]


__all__ = [
    "FILES",
    "LABELS",
    "build_index",
    "fetch",
    "index_files",
    "official_split",
    "plan_index",
    "read_entries",
    "remote_files",
]
