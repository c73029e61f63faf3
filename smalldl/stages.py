"""Stage-wise study: the winner of a stage is the candidate recipe with the best validation AUC averaged
over training sizes and seeds. Test AUC is never looked at here (it would leak the test set into the
choice of recipe)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _score(row: Mapping[str, Any], select_on: str) -> float:
    value = row.get(select_on)
    if value is None and select_on != "val_auc":
        value = row.get("val_auc")
    return math.nan if value is None else float(value)


def select_winner(rows: Iterable[Mapping[str, Any]], candidates: Sequence[str], select_on: str) -> dict[str, Any]:
    """``rows``: the metrics of every run of the candidates. Ties go to the earlier candidate; a candidate
    whose runs all have an undefined AUC cannot win."""
    if select_on.startswith("test"):
        raise ValueError("stage winners are chosen on validation scores, never on test scores")
    values: dict[str, list[float]] = {c: [] for c in candidates}
    for row in rows:
        if row["recipe"] in values:
            values[row["recipe"]].append(_score(row, select_on))
    scores: dict[str, float | None] = {}
    for name, vals in values.items():
        finite = [v for v in vals if math.isfinite(v)]
        scores[name] = sum(finite) / len(finite) if finite else None
    ranked = [c for c in candidates if scores[c] is not None]
    if not ranked:
        raise ValueError(f"no candidate has a defined {select_on}: {list(candidates)}")
    winner = max(ranked, key=lambda c: (scores[c], -candidates.index(c)))
    return {
        "candidates": list(candidates),
        "scores": scores,
        "runs": {c: len(v) for c, v in values.items()},
        "winner": winner,
        "select_on": select_on,
    }
