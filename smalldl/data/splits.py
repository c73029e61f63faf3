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

from smalldl.data import kinds
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
    info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """The task's images: label columns checked, exclusions applied, optional cap drawn at random.

    Uncertain labels (-1, e.g. CheXpert's ``ignore`` policy): a binary task leaves the image out (its
    only label is unknown). A multilabel task with ``uncertain: mask`` (the default) keeps the image
    and its -1, which training leaves out of the loss and evaluation out of that label's AUC; images
    with every label uncertain are left out. ``uncertain: drop`` leaves out every image with an
    uncertain label. ``info``, when given, receives what was dropped or masked and why (written to the
    split manifest).
    """
    labels = list(task["labels"])
    where = f"task {task_name}"
    check_labels(index, labels + list(task.get("exclude_positive", [])), where)
    keep = ["image_id", "patient_id", *labels]
    if "official_split" in index.columns:
        keep.append("official_split")
    table = index[keep].copy()
    table[labels] = table[labels].astype(np.int64)
    stats: dict[str, Any] = {"index_images": int(len(table))}
    for col in task.get("exclude_positive", []):
        positive = index.loc[table.index, col].astype(np.int64) != 0
        stats.setdefault("excluded_positive", {})[col] = int(positive.sum())
        table = table[~positive]
    excluded = set(excluded_patients)
    if excluded:
        hit = table["patient_id"].isin(excluded)
        stats["excluded_patient_images"] = int(hit.sum())
        table = table[~hit]
    if task["type"] in ("binary", "multilabel"):
        uncertain = table[labels] == -1
        if uncertain.to_numpy().any():
            mask = task["type"] == "multilabel" and task.get("uncertain", "mask") == "mask"
            drop = uncertain.all(axis=1) if mask else uncertain.any(axis=1)
            if mask:
                stats["uncertain_masked"] = uncertain_counts(table[~drop], labels)
            stats["uncertain_dropped"] = uncertain_counts(table[drop], labels)
            stats["uncertain_dropped_images"] = int(drop.sum())
            table = table[~drop]
        bad = ~table[labels].isin([0, 1, -1]).all(axis=1)
        if bad.any():
            raise InputError(
                f"{where}: image {table.loc[bad.idxmax(), 'image_id']!r} has a label other than 0/1 (or -1, uncertain)"
            )
    cap = task.get("max_images")
    if cap is not None and len(table) > cap:
        rng = np.random.default_rng(derive_seed(seed, "cap", task_name))
        keep_rows = np.sort(rng.choice(len(table), size=cap, replace=False))
        table = table.iloc[keep_rows]
        stats["capped_to"] = int(cap)
    if table.empty:
        raise InputError(f"{where}: no images left after exclusions")
    stats["images"] = int(len(table))
    if info is not None:
        info.update(stats)
    return table.reset_index(drop=True)


def positive_counts(table: pd.DataFrame, labels: Iterable[str]) -> dict[str, int]:
    """Positives (1) per label column; an uncertain -1 is not a positive."""
    return {c: int((table[c] == 1).sum()) for c in labels}


def uncertain_counts(table: pd.DataFrame, labels: Iterable[str]) -> dict[str, int]:
    """Uncertain labels (-1) per label column, for the labels that have any."""
    counts = {c: int((table[c] == -1).sum()) for c in labels}
    return {c: k for c, k in counts.items() if k}


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


def official_assignment(table: pd.DataFrame, task_name: str, val_fraction: float, seed: int) -> dict[str, str]:
    """Patient -> split with the dataset's fixed test set: test = patients of ``official_split == test``
    images, validation = a seeded share ``val_fraction`` of the other patients."""
    where = f"task {task_name}"
    if "official_split" not in table.columns:
        raise InputError(
            f"{where}: test_split 'official' needs a dataset with a fixed test set (an index column "
            f"official_split: kinds {kinds.official_split_kinds()})"
        )
    is_test = table["official_split"].to_numpy() == "test"
    test_patients = set(table.loc[is_test, "patient_id"])
    other = table.loc[~is_test, "patient_id"]
    both = other[other.isin(test_patients)]
    if len(both):
        pid = both.iloc[0]
        img_train = table.loc[(~is_test) & (table["patient_id"] == pid).to_numpy(), "image_id"].iloc[0]
        img_test = table.loc[is_test & (table["patient_id"] == pid).to_numpy(), "image_id"].iloc[0]
        raise InputError(
            f"{where}: patient {pid!r} is in two splits: image {img_test!r} is in the official test set, "
            f"image {img_train!r} is not"
        )
    if not test_patients:
        raise InputError(f"{where}: the official test set has no image of this task")
    out = assign_patients(other, val_fraction, 0.0, seed)
    out.update({p: "test" for p in test_patients})
    return out


def make_split(
    table: pd.DataFrame, task_name: str, task: Mapping[str, Any], seed: int, dataset: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Assign every image of ``table`` to train/val/test by patient and select the val/test images.

    Returns the table with columns ``split`` and ``selected`` and a manifest (seeds, counts, positives).
    Tasks on one dataset with the same fractions share their patient assignment (same seed), so
    targets share test patients. With ``test_split: official`` the test patients are the dataset's fixed
    test set (ChestX-ray14's test_list.txt) and ``val_fraction`` is a share of the remaining patients.
    """
    official = task.get("test_split", "random") == "official"
    if official:
        patient_seed = derive_seed(seed, "patients", dataset, task["val_fraction"], "official")
        assignment = official_assignment(table, task_name, task["val_fraction"], patient_seed)
    else:
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
    counts = split_counts(out, task)
    manifest = {
        "task": task_name,
        "dataset": dataset,
        "type": task["type"],
        "labels": list(task["labels"]),
        "test_split": "official" if official else "random",
        "balance": bool(task["type"] == "binary" and task.get("balance", True)),
        "seeds": {"global": seed, "patients": patient_seed, "select": select_seed},
        "counts": counts,
    }
    if task["type"] == "multilabel":
        empty = {
            name: [c for c, k in counts[name]["positives"].items() if k == 0]
            for name in SPLITS
            if counts[name]["images"]
        }
        manifest["labels_without_positives"] = {k: v for k, v in empty.items() if v}
    return out, manifest


def split_counts(split: pd.DataFrame, task: Mapping[str, Any]) -> dict[str, Any]:
    """Images, patients and positives per label for each split (selected images only)."""
    counts: dict[str, Any] = {}
    used = split[split["selected"]]
    for name in SPLITS:
        part = used[used["split"] == name]
        entry: dict[str, Any] = {"images": int(len(part)), "patients": int(part["patient_id"].nunique())}
        if task["type"] != "multiclass":
            entry["positives"] = positive_counts(part, task["labels"])
            uncertain = uncertain_counts(part, task["labels"])
            if uncertain:
                entry["uncertain_masked"] = uncertain
            if task["type"] == "binary":
                entry["negatives"] = int((part[task["labels"][0]] == 0).sum())
        else:
            entry["classes"] = int(part[task["labels"][0]].nunique())
        counts[name] = entry
    return counts


def _check_split(split: pd.DataFrame, task_name: str, task: Mapping[str, Any]) -> None:
    by_patient = split.groupby("patient_id")["split"].nunique()
    if (by_patient > 1).any():
        raise InputError(f"task {task_name}: patient {by_patient.idxmax()!r} is in two splits")
    used = split[split["selected"]]
    official = task.get("test_split", "random") == "official"
    for name in SPLITS:
        everyone = split[split["split"] == name]
        part = used[used["split"] == name]
        fraction = task["test_fraction"] if name == "test" else task["val_fraction"] if name == "val" else 1
        if fraction == 0 and not (official and name == "test"):
            continue
        if task["type"] == "binary" and not everyone.empty:
            label = task["labels"][0]
            pos, neg = int((everyone[label] == 1).sum()), int((everyone[label] == 0).sum())
            if pos == 0 or neg == 0:
                lacking = "positive" if pos == 0 else "negative"
                key = f"tasks.{task_name}.{name}_fraction" if name != "train" else f"tasks.{task_name}"
                raise InputError(
                    f"task {task_name}: no {lacking} {label} images in the {name} split ({pos} positive, {neg} "
                    f"negative, {everyone['patient_id'].nunique()} patients; an AUC needs at least 1 of each, a few "
                    f"dozen for a stable one): add {lacking} images or raise {key} (now {fraction})"
                )
        if part.empty:
            raise InputError(f"task {task_name}: the {name} split is empty (too few patients)")


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
    """Training subset of size ``n`` for ``seed`` (nested in larger n) and its manifest.

    Binary tasks with ``balance`` want ceil(n/2) positives. When the pool has fewer, the task's
    ``positives_shortfall`` decides: ``fill`` (default) tops the subset up with negatives and records the
    shortfall; ``error`` stops. Never a duplicate.
    """
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
        policy = task.get("positives_shortfall", "fill")
        info["positives"] = positives
        info["negatives"] = int(n - positives)
        info["positives_wanted"] = wanted
        info["positives_short"] = max(0, wanted - positives) if wanted is not None else 0
        info["shortfall_policy"] = policy
        info["pool_positives"] = int(split[label].to_numpy()[order].sum())
        if positives == 0:
            raise InputError(f"task {task_name}: training subset n={n} seed={seed} has no positive {label} image")
        if info["positives_short"] and policy == "error":
            raise InputError(
                f"task {task_name}: training subset n={n} seed={seed} wants {wanted} positive {label} images but "
                f"the training pool has {info['pool_positives']} (tasks.{task_name}.positives_shortfall: error; "
                "'fill' tops up with negatives)"
            )
    elif task["type"] == "multilabel":
        info["positives"] = positive_counts(subset, task["labels"])
        uncertain = uncertain_counts(subset, task["labels"])
        if uncertain:
            info["uncertain_masked"] = uncertain
    assert subset["image_id"].is_unique
    return subset, info


def used_patients(split: pd.DataFrame, subsets: Iterable[pd.DataFrame], scope: str = "used") -> set[str]:
    """Patients of a target task's images: those of its validation and test images and of every training
    subset (``scope="used"``, the paper's "no overlap with the target set"), or with ``scope="split"``
    everyone assigned to val/test, including patients none of whose images was sampled there."""
    eval_rows = split["split"].isin(["val", "test"])
    if scope == "used":
        eval_rows &= split["selected"]
    elif scope != "split":
        raise ValueError(f"unknown scope {scope!r}")
    used = set(split.loc[eval_rows, "patient_id"])
    for sub in subsets:
        used.update(sub["patient_id"])
    return used
