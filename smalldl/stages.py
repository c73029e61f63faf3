"""Stage-wise study: the winner of a stage is the candidate recipe with the best validation AUC averaged
over training sizes and seeds. Test AUC is never looked at here (it would leak the test set into the
choice of recipe)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from smalldl.tta import tta_else_plain


def _score(row: Mapping[str, Any], select_on: str) -> float:
    value = row.get(tta_else_plain(select_on, lambda key: row.get(key) is not None))
    return math.nan if value is None else float(value)


def best_candidate(scores: Mapping[str, float | None], candidates: Sequence[str]) -> str | None:
    """The candidate with the highest score; ties go to the earlier candidate. A candidate whose score is
    missing, None or NaN cannot be chosen; None when no candidate has a score."""
    ranked = [c for c in candidates if scores.get(c) is not None and not math.isnan(scores[c])]
    return max(ranked, key=lambda c: (scores[c], -candidates.index(c))) if ranked else None


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
    winner = best_candidate(scores, candidates)
    if winner is None:
        raise ValueError(f"no candidate has a defined {select_on}: {list(candidates)}")
    return {
        "candidates": list(candidates),
        "scores": scores,
        "runs": {c: len(v) for c, v in values.items()},
        "winner": winner,
        "select_on": select_on,
    }
