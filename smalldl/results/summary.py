"""The summary table (one row per run, from the runs' metrics.json) and Table 1 (from the split manifests).

The metrics.json schema is the one written by the training and radiomics jobs. Optional keys (TTA,
per-label AUCs, timings, radiomics fields) may be absent or null: the code uses what is there. The headline
test metric is ``test_auc_tta`` (TTA, as the paper reports) falling back to ``test_auc`` where a run has no
TTA (``smalldl.tta``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from smalldl.data.splits import SPLITS
from smalldl.errors import InputError
from smalldl.record import DERIVED, REQUIRED, RUN_KEYS, SUMMARY_LEAD, read_metrics_json
from smalldl.tta import tta_else_plain
from smalldl.utils import as_number

# ------------------------------------------------------------------------------------------ summary


def _flatten(m: Mapping[str, Any]) -> dict[str, Any]:
    """Scalars as they are, {label: value} dicts as ``key[label]`` columns, lists joined with ';',
    anything deeper as JSON text."""
    row: dict[str, Any] = {}
    for key, value in m.items():
        if value is None or isinstance(value, str | int | float | bool):
            row[key] = value
        elif isinstance(value, dict) and all(
            v is None or isinstance(v, str | int | float | bool) for v in value.values()
        ):
            for sub, v in value.items():
                row[f"{key}[{sub}]"] = v
        elif isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
            row[key] = ";".join(str(v) for v in value)
        else:
            row[key] = json.dumps(value, sort_keys=True)
    return row


def _read_one(path: str | Path) -> dict[str, Any]:
    m = read_metrics_json(path)
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise InputError(f"run metrics {path}: missing key(s) {', '.join(missing)}")
    row = _flatten(m)
    row.setdefault("family", "cnn")
    row["path"] = str(Path(path).parent)
    return row


def _arrow_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Columns whose values mix types (a key that is a number in one run, text in another) become text,
    so that the table writes to parquet."""
    for col in table.columns:
        if table[col].dtype == object:
            kinds = {type(v) for v in table[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1 and not kinds <= {int, float}:
                table[col] = [
                    None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in table[col]
                ]
    return table


def _headline(row: dict[str, Any], metric: str, select_on: str) -> None:
    """``headline_auc`` (``metric``, falling back to the plain AUC when null or absent), ``headline_metric``
    (which key supplied it) and ``select_auc`` (``select_on``, same fallback) of one run."""
    for out, key, name in (("headline_auc", metric, "headline_metric"), ("select_auc", select_on, None)):
        used = tta_else_plain(key, lambda k: not math.isnan(as_number(row.get(k))))
        row[out] = as_number(row.get(used))
        if name:
            row[name] = used


def read_metrics(
    paths: Iterable[str | Path], metric: str = "test_auc_tta", select_on: str = "val_auc_tta", workers: int = 8
) -> pd.DataFrame:
    """One row per metrics.json: the recipe axes, every scalar metric, per-label AUCs as ``key[label]``
    columns, and ``headline_auc`` (``metric``, falling back to the plain AUC when null or absent),
    ``headline_metric`` (which key supplied it) and ``select_auc`` (``select_on``, same fallback)."""
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # file reads overlap; parsing is cheap
        rows = list(pool.map(_read_one, paths, chunksize=64))
    for row in rows:
        _headline(row, metric, select_on)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=[*RUN_KEYS, *DERIVED, "path"])
    for col in ("n", "seed"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("int64")
    for col in ("schedule", "transfer", "source", "init", "featureset", "model"):
        if col not in table:
            table[col] = None
    lead = [c for c in SUMMARY_LEAD if c in table.columns]
    rest = sorted(c for c in table.columns if c not in lead and c != "path")
    table = table[[*lead, *rest, "path"]]
    table = table.sort_values(["task", "arch", "recipe", "n", "seed"], kind="mergesort").reset_index(drop=True)
    return _arrow_safe(table)


def mean_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of the headline test AUC over seeds per (task, arch, recipe, n)."""
    value = "headline_auc" if "headline_auc" in table else "test_auc"
    grouped = table.groupby(["task", "arch", "recipe", "n"], sort=True)[value]
    return grouped.agg(["mean", "std", "count"]).reset_index()


# ------------------------------------------------------------------------------------------ Table 1


def subset_positives(n: int, pool_positives: int, pool_images: int) -> int:
    """Positives in a balanced binary training subset of size ``n`` (smalldl.data.splits.train_order:
    positives and negatives alternate, positive first, until one kind runs out; never a duplicate)."""
    negatives = pool_images - pool_positives
    k = min(pool_positives, negatives)
    if n <= 2 * k:
        return (n + 1) // 2
    return k + (min(n, pool_images) - 2 * k if pool_positives > negatives else 0)


def table1(
    manifests: Mapping[str, str | Path],
    targets: Sequence[str],
    tasks: Mapping[str, Mapping[str, Any]],
    sizes: Sequence[int] = (),
) -> pd.DataFrame:
    """Images, patients, positives and masked uncertain labels per task, label and split, from the split
    manifests (``counts`` as written by smalldl.data.splits.split_counts); one row per (task, label).
    ``tasks``: each manifest's task's ``type``, ``labels`` and (binary) ``balance``; a task among
    ``targets`` is a target, any other a source. With the study's training ``sizes``, a balanced binary
    target's row also says how many positives the subset of each size holds
    (``train_subset_positives``, e.g. "50: 25, 500: 121") and from which size the pool's positives run
    short and the subsets are filled with negatives (``filled_with_negatives_from_n``; the authors'
    code duplicated positives instead)."""
    rows = []
    targets = set(targets)
    for task, path in manifests.items():
        try:
            manifest = json.loads(Path(path).read_text())
            counts = manifest["counts"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"split manifest {path} cannot be read or has no 'counts' ({exc})") from None
        spec = tasks[task]
        for label in spec["labels"]:
            row: dict[str, Any] = {
                "task": task,
                "role": "target" if task in targets else "source",
                "type": spec["type"],
                "label": label,
            }
            for split in SPLITS:
                entry = counts.get(split) or {}
                row[f"{split}_images"] = entry.get("images")
                row[f"{split}_patients"] = entry.get("patients")
                row[f"{split}_positives"] = (entry.get("positives") or {}).get(label)
                row[f"{split}_uncertain"] = (entry.get("uncertain_masked") or {}).get(label, 0)
                if "classes" in entry:
                    row[f"{split}_classes"] = entry["classes"]
            if sizes and task in targets and spec["type"] == "binary" and spec.get("balance", True):
                pool, positives = row["train_images"], row["train_positives"]
                if pool is not None and positives is not None:
                    held = {n: subset_positives(n, positives, pool) for n in sorted(sizes)}
                    row["train_subset_positives"] = ", ".join(f"{n}: {k}" for n, k in held.items())
                    short = [n for n, k in held.items() if k < (n + 1) // 2]
                    row["filled_with_negatives_from_n"] = short[0] if short else None
            rows.append(row)
    return pd.DataFrame(rows)
