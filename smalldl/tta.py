"""Test-time augmentation (TTA) scores and the plain scores that stand in for them.

A metric with TTA (``test_auc_tta``, ``val_auc_tta``) falls back to the same metric without it
(``test_auc``, ``val_auc``) for a run that has no TTA score: the headline test AUC, the selection score
of the results and of the stage winners, and the predictions a bootstrap resamples all follow this rule.
"""

from __future__ import annotations

from collections.abc import Callable

TTA_SUFFIX = "_tta"


def plain_metric(key: str) -> str:
    """The metric without TTA: ``test_auc_tta`` -> ``test_auc``; a plain metric is its own."""
    return key.removesuffix(TTA_SUFFIX)


def tta_else_plain(key: str, defined: Callable[[str], bool]) -> str:
    """The metric that supplies ``key``'s score: ``key`` itself where ``defined(key)`` (the run has that
    score), else the same metric without TTA."""
    return key if defined(key) else plain_metric(key)
