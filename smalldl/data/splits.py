"""Patient-level splits, balanced val/test for binary tasks, nested training subsets per (n, seed).

Every draw is seeded from (global seed, purpose, task or dataset, seed) via ``derive_seed`` and the
seeds are written to the manifests, so a split can be audited and redrawn exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from smalldl.data.index import check_labels
from smalldl.errors import InputError
from smalldl.utils import derive_seed

SPLITS = ("train", "val", "test")


def task_table(
    index: pd.DataFrame,
    task_name: str,
    task: Mapping[str, Any],
    excluded_patients: Iterable[str] = (),
    seed: int = 0,
) -> pd.DataFrame:
    """The task's images: label columns checked, exclusions applied, optional cap drawn at random."""
    labels = list(task["labels"])
    where = f"task {task_name}"
    check_labels(index, labels + list(task.get("exclude_positive", [])), where)
    table = index[["image_id", "patient_id", *labels]].copy()
    table[labels] = table[labels].astype(np.int64)
    for col in task.get("exclude_positive", []):
        table = table[index.loc[table.index, col].astype(np.int64) == 0]
    excluded = set(excluded_patients)
    if excluded:
        table = table[~table["patient_id"].isin(excluded)]
    if task["type"] in ("binary", "multilabel"):
        bad = ~table[labels].isin([0, 1]).all(axis=1)
        if bad.any():
            raise InputError(f"{where}: image {table.loc[bad.idxmax(), 'image_id']!r} has a label other than 0/1")
    cap = task.get("max_images")
    if cap is not None and len(table) > cap:
        rng = np.random.default_rng(derive_seed(seed, "cap", task_name))
        keep = np.sort(rng.choice(len(table), size=cap, replace=False))
        table = table.iloc[keep]
    if table.empty:
        raise InputError(f"{where}: no images left after exclusions")
    return table.reset_index(drop=True)


def assign_patients(patients: Iterable[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Patient -> 'train' | 'val' | 'test', a seeded permutation of the sorted unique patient ids."""
    unique = np.array(sorted(set(patients)))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = int(round(test_fraction * len(unique)))
    n_val = int(round(val_fraction * len(unique)))
    out: dict[str, str] = {}
    for rank, idx in enumerate(order):
        out[unique[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def _select_eval(part: pd.DataFrame, task: Mapping[str, Any], cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the val/test images used: binary+balance keeps every positive (up to cap/2)."""
    mask = np.zeros(len(part), dtype=bool)
    if task["type"] == "binary" and task.get("balance", True):
        label = task["labels"][0]
        pos = np.flatnonzero(part[label].to_numpy() == 1)
        neg = np.flatnonzero(part[label].to_numpy() == 0)
        if cap is not None:
            pos = rng.permutation(pos)[: cap // 2]
        neg = rng.permutation(neg)[: len(pos)]
        mask[pos] = True
        mask[neg] = True
    else:
        keep = rng.permutation(len(part))[: cap if cap is not None else len(part)]
        mask[keep] = True
    return mask


def make_split(
    table: pd.DataFrame, task_name: str, task: Mapping[str, Any], seed: int, dataset: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Assign every image of ``table`` to train/val/test by patient and select the val/test images.

    Returns the table with columns ``split`` and ``selected`` and a manifest (seeds, counts, positives).
    Tasks on one dataset with the same fractions share their patient assignment (same seed), so
    targets share test patients, as with ChestX-ray14's official test list.
    """
    patient_seed = derive_seed(seed, "patients", dataset, task["val_fraction"], task["test_fraction"])
    assignment = assign_patients(table["patient_id"], task["val_fraction"], task["test_fraction"], patient_seed)
    out = table.copy()
    out["split"] = out["patient_id"].map(assignment)
    out["selected"] = out["split"] == "train"
    select_seed = derive_seed(seed, "select", task_name)
    rng = np.random.default_rng(select_seed)
    for name, cap in (("val", task.get("max_val_images")), ("test", task.get("max_test_images"))):
        part_idx = np.flatnonzero(out["split"].to_numpy() == name)
        if len(part_idx):
            mask = _select_eval(out.iloc[part_idx], task, cap, rng)
            out.loc[out.index[part_idx[mask]], "selected"] = True
    _check_split(out, task_name, task)
    manifest = {
        "task": task_name,
        "dataset": dataset,
        "type": task["type"],
        "labels": list(task["labels"]),
        "seeds": {"global": seed, "patients": patient_seed, "select": select_seed},
        "counts": split_counts(out, task),
    }
    return out, manifest


def split_counts(split: pd.DataFrame, task: Mapping[str, Any]) -> dict[str, Any]:
    """Images, patients and positives per label for each split (selected images only)."""
    counts: dict[str, Any] = {}
    used = split[split["selected"]]
    for name in SPLITS:
        part = used[used["split"] == name]
        entry: dict[str, Any] = {"images": int(len(part)), "patients": int(part["patient_id"].nunique())}
        if task["type"] != "multiclass":
            entry["positives"] = {c: int(part[c].sum()) for c in task["labels"]}
        else:
            entry["classes"] = int(part[task["labels"][0]].nunique())
        counts[name] = entry
    return counts


def _check_split(split: pd.DataFrame, task_name: str, task: Mapping[str, Any]) -> None:
    by_patient = split.groupby("patient_id")["split"].nunique()
    if (by_patient > 1).any():
        raise InputError(f"task {task_name}: patient {by_patient.idxmax()!r} is in two splits")
    used = split[split["selected"]]
    for name in SPLITS:
        part = used[used["split"] == name]
        fraction = task["test_fraction"] if name == "test" else task["val_fraction"] if name == "val" else 1
        if fraction == 0:
            continue
        if part.empty:
            raise InputError(f"task {task_name}: the {name} split is empty (too few patients)")
        if task["type"] == "binary":
            label = task["labels"][0]
            if part[label].sum() == 0:
                raise InputError(f"task {task_name}: no positive {label} images in the {name} split")
            if (part[label] == 0).sum() == 0:
                raise InputError(f"task {task_name}: no negative {label} images in the {name} split")


def train_order(
    split: pd.DataFrame, task_name: str, task: Mapping[str, Any], seed: int, global_seed: int
) -> tuple[np.ndarray, int]:
    """The seeded order of the training pool; every subset of size n is its first n rows (nested).

    Binary tasks with ``balance``: positives and negatives alternate (half positive) until positives
    run out, then negatives follow. Returns (row positions into ``split``, the draw's seed).
    """
    draw_seed = derive_seed(global_seed, "subset", task_name, seed)
    rng = np.random.default_rng(draw_seed)
    pool = np.flatnonzero(((split["split"] == "train") & split["selected"]).to_numpy())
    if task["type"] == "binary" and task.get("balance", True):
        y = split[task["labels"][0]].to_numpy()[pool]
        pos, neg = rng.permutation(pool[y == 1]), rng.permutation(pool[y == 0])
        k = min(len(pos), len(neg))
        head = np.empty(2 * k, dtype=np.int64)
        head[0::2], head[1::2] = pos[:k], neg[:k]
        order = np.concatenate([head, pos[k:], neg[k:]])
    else:
        order = rng.permutation(pool)
    return order, draw_seed


def draw_subset(
    split: pd.DataFrame, task_name: str, task: Mapping[str, Any], n: int, seed: int, global_seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Training subset of size ``n`` for ``seed`` (nested in larger n) and its manifest."""
    order, draw_seed = train_order(split, task_name, task, seed, global_seed)
    if n > len(order):
        raise InputError(
            f"task {task_name}: training size n={n} is larger than the training pool ({len(order)} images)"
        )
    subset = split.iloc[order[:n]][["image_id", "patient_id", *task["labels"]]].reset_index(drop=True)
    info: dict[str, Any] = {"task": task_name, "n": n, "seed": seed, "draw_seed": draw_seed, "pool": int(len(order))}
    if task["type"] == "binary":
        label = task["labels"][0]
        positives = int(subset[label].sum())
        wanted = math.ceil(n / 2) if task.get("balance", True) else None
        info["positives"] = positives
        info["positives_wanted"] = wanted
        info["positives_short"] = max(0, wanted - positives) if wanted is not None else 0
        if positives == 0:
            raise InputError(f"task {task_name}: training subset n={n} seed={seed} has no positive {label} image")
    elif task["type"] == "multilabel":
        info["positives"] = {c: int(subset[c].sum()) for c in task["labels"]}
    return subset, info


def used_patients(split: pd.DataFrame, subsets: Iterable[pd.DataFrame]) -> set[str]:
    """Patients a target task uses: everyone assigned to val/test, plus every training subset."""
    used = set(split.loc[split["split"].isin(["val", "test"]), "patient_id"])
    for sub in subsets:
        used.update(sub["patient_id"])
    return used
