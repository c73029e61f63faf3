"""Aggregation of per-run outputs into one summary table (one row per run)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from smalldl.errors import InputError
from smalldl.utils import atomic_path

AXES = ["task", "arch", "recipe", "schedule", "transfer", "source", "init", "n", "seed"]
SCALARS = [
    "val_auc",
    "test_auc",
    "val_loss",
    "test_loss",
    "selected_epoch",
    "epochs",
    "max_lr",
    "n_train",
    "n_val",
    "n_test",
    "wall_time_s",
    "images_per_s",
    "device",
]


def read_metrics(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per metrics.json: the recipe axes, scalar metrics and per-label test AUCs."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            m = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"run metrics {path} cannot be read ({exc})") from None
        missing = [k for k in AXES + ["test_auc", "val_auc"] if k not in m]
        if missing:
            raise InputError(f"run metrics {path}: missing key(s) {', '.join(missing)}")
        row = {k: m[k] for k in AXES + SCALARS if k in m}
        for label, auc in (m.get("test_auc_per_label") or {}).items():
            row[f"test_auc[{label}]"] = auc
        row["path"] = str(Path(path).parent)
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(["task", "arch", "recipe", "n", "seed"]).reset_index(drop=True)
    return table


def write_summary(table: pd.DataFrame, out_parquet: str | Path, out_csv: str | Path) -> None:
    with atomic_path(out_parquet) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)


def mean_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of test AUC over seeds per (task, arch, recipe, n)."""
    grouped = table.groupby(["task", "arch", "recipe", "n"], sort=True)["test_auc"]
    return grouped.agg(["mean", "std", "count"]).reset_index()
