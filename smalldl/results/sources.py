"""The source models of a study (source_models.csv): each one's chain, recipe and validation AUC with its
CI, from the metadata the pretrain and imagenet_weights jobs write next to the checkpoint
(results/models/source/{source}/{arch}.json). A pretrained source whose CI reaches 0.5 is flagged 'not
learned': fine-tuning from it transfers little more than its initial weights. Weights read from a file the config
names (``sources.<name>.files``), and source models trained here from them, are of unverified provenance
(column ``provenance``): nothing here knows what they were trained on."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats as sps

from smalldl.config import UNVERIFIED
from smalldl.errors import InputError
from smalldl.utils import as_number

COLUMNS = [
    "source", "arch", "kind", "task", "chain", "recipe", "n_train", "n_val", "best_epoch", "val_auc",
    "val_auc_se", "ci_lo", "ci_hi", "flag", "provenance",
]  # fmt: skip


def read_meta(path: str | Path) -> dict[str, Any]:
    """A source model's metadata JSON."""
    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"source model metadata {path} cannot be read ({exc})") from None
    if not isinstance(meta, dict) or "source" not in meta or "arch" not in meta:
        raise InputError(f"source model metadata {path}: needs the keys source and arch")
    return meta


def source_row(meta: Mapping[str, Any], level: float) -> dict[str, Any]:
    """One source model: chain as 'imagenet -> cxr13', its validation AUC with a normal CI from the
    bootstrap standard error over the validation images (``val_auc_se``, written by the pretrain job), and
    its flag: 'published weights', 'learned' (CI above 0.5), 'not learned' (CI reaching 0.5 or below),
    'no CI' (metadata written before the standard error was recorded: rerun rule pretrain), 'no validation
    AUC' (undefined: one class only)."""
    published = meta.get("weights") is not None
    auc, se = as_number(meta.get("val_auc")), as_number(meta.get("val_auc_se"))
    lo = hi = math.nan
    if not math.isnan(auc) and not math.isnan(se):
        z = float(sps.norm.ppf(0.5 + level / 2))
        lo, hi = max(0.0, auc - z * se), min(1.0, auc + z * se)
    if published:
        flag = "published weights"
    elif math.isnan(auc):
        flag = "no validation AUC"
    elif math.isnan(lo):
        flag = "no CI"
    else:
        flag = "learned" if lo > 0.5 else "not learned"
    return {
        "source": meta["source"],
        "arch": meta["arch"],
        "kind": "published" if published else "pretrained",
        "task": meta.get("task"),
        "chain": " -> ".join(str(s) for s in meta.get("chain") or [meta["source"]]),
        "recipe": meta.get("recipe") or (f"weights: {meta['weights']}" if published else None),
        "n_train": meta.get("n_train"),
        "n_val": meta.get("n_val"),
        "best_epoch": meta.get("best_epoch"),
        "val_auc": auc,
        "val_auc_se": se,
        "ci_lo": lo,
        "ci_hi": hi,
        "flag": flag,
        "provenance": meta.get("provenance") or ("published" if published else "trained here"),
    }


def source_table(metas: Sequence[Mapping[str, Any]], level: float) -> pd.DataFrame:
    """One row per source model (``source_row``), ordered by source and architecture."""
    table = pd.DataFrame([source_row(m, level) for m in metas], columns=COLUMNS)
    for col in ("n_train", "n_val", "best_epoch"):  # counts, absent for published weights
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("Int64")
    return table.sort_values(["source", "arch"], kind="mergesort").reset_index(drop=True)


def unverified(sources: pd.DataFrame | None) -> list[str]:
    """'source (arch)' of every source model of unverified provenance."""
    if sources is None or sources.empty or "provenance" not in sources.columns:
        return []
    rows = sources[sources["provenance"].astype(str).str.endswith(UNVERIFIED)]
    return [f"{r['source']} ({r['arch']})" for r in rows.to_dict("records")]
