"""rules/splits.smk: index -> results/splits/{task}/split.parquet (patient-level train/val/test) ->
nested training subsets."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smalldl.data import splits as splits_mod
from smalldl.utils import read_table, write_csv, write_json, write_parquet


def excluded_inputs(named: Mapping[str, Any], count: int) -> list[tuple[str, list[str]]]:
    """(split.parquet, [subset csvs]) of each task a split must avoid, from the split rule's named
    inputs ``exclude_split_{i}`` / ``exclude_subsets_{i}`` (rules/common.smk, ``split_inputs``)."""
    out = []
    for i in range(count):
        subsets = named.get(f"exclude_subsets_{i}", [])
        out.append((str(named[f"exclude_split_{i}"]), [subsets] if isinstance(subsets, str) else list(subsets)))
    return out


def split(
    *,
    task_name: str,
    task: Mapping[str, Any],
    global_seed: int,
    index_parquet: str | Path,
    excluded_from: Sequence[tuple[str | Path, Sequence[str | Path]]],
    out_split: str | Path,
    out_manifest: str | Path,
) -> dict[str, Any]:
    """Split one task; ``excluded_from`` = (split.parquet, [subset csvs]) of the tasks it must avoid."""
    index = read_table(index_parquet)
    excluded: set[str] = set()
    for split_path, subset_paths in excluded_from:
        other = read_table(split_path)
        subsets = [read_table(p, dtype={"image_id": str, "patient_id": str}) for p in subset_paths]
        excluded |= splits_mod.used_patients(other, subsets, task.get("exclude_patients_scope", "used"))
    selection: dict[str, Any] = {}
    table = splits_mod.task_table(index, task_name, task, excluded, seed=global_seed, info=selection)
    split_table, manifest = splits_mod.make_split(table, task_name, task, global_seed, task["dataset"])
    manifest["excluded_patients"] = len(excluded)
    manifest["excluded_patients_of"] = list(task["exclude_patients_of"])
    manifest["selection"] = selection
    if selection.get("uncertain_masked"):
        masked = ", ".join(f"{c} {k}" for c, k in selection["uncertain_masked"].items())
        print(f"{task_name}: uncertain labels masked (left out of loss and AUC): {masked}", file=sys.stderr)
    for name, labels in manifest.get("labels_without_positives", {}).items():
        print(f"WARNING: {task_name}: no positive image in the {name} split for {', '.join(labels)}", file=sys.stderr)
    write_parquet(split_table, out_split)
    write_json(out_manifest, manifest)
    print(json.dumps(manifest["counts"], indent=1), file=sys.stderr)
    return manifest


def subset(
    *,
    task_name: str,
    task: Mapping[str, Any],
    global_seed: int,
    split_parquet: str | Path,
    n: int,
    seed: int,
    out_csv: str | Path,
    out_json: str | Path,
) -> dict[str, Any]:
    """The training subset of size ``n`` for ``seed`` (nested in larger n)."""
    table = read_table(split_parquet)
    drawn, info = splits_mod.draw_subset(table, task_name, task, n, seed, global_seed)
    write_csv(drawn, out_csv)
    write_json(out_json, info)
    if info.get("positives_short"):
        print(
            f"WARNING: {task_name} n={n}: {info['positives_short']} positives short of half; "
            "filled with negatives (no duplicates)",
            file=sys.stderr,
        )
    return info


def study_gate(
    *,
    pairs: Sequence[Mapping[str, Any]],
    task_datasets: Mapping[str, str],
    split_parquets: Mapping[str, str | Path],
    index_parquets: Mapping[str, str | Path],
    out_json: str | Path,
) -> dict[str, Any]:
    """The study gate, which every training job of the study waits for: no source model of any
    (target, source chain) pair (``pairs``: config.gate_pairs) saw a patient or an image file of the
    target's validation or test set (smalldl.leakage.gate). ``task_datasets``: task -> dataset of every task
    of the pairs; ``split_parquets``: task -> split.parquet; ``index_parquets``: dataset -> index.parquet."""
    from smalldl import leakage

    paths = {}
    for dataset, index in index_parquets.items():
        table = read_table(index, columns=["image_id", "path"])
        paths[dataset] = dict(zip(table["image_id"].astype(str), table["path"].astype(str), strict=True))
    record = leakage.gate(
        pairs=pairs,
        splits={task: read_table(path) for task, path in split_parquets.items()},
        paths={task: paths[dataset] for task, dataset in task_datasets.items()},
        task_datasets=task_datasets,
    )
    write_json(out_json, record)
    for pair in record["pairs"]:
        print(f"no leakage: {pair['target']} from {' -> '.join(pair['chain'])}", file=sys.stderr)
    print(f"study gate: {len(record['pairs'])} (target, source) pairs checked, no leakage", file=sys.stderr)
    return record
