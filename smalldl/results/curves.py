"""Learning curves: a fitted AUC(n) per task, architecture and recipe and, when the user sets a target AUC
(results.target_auc), the training size needed to reach it with a bootstrap interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from smalldl import stats
from smalldl.utils import derive_seed


def learning_curves(
    summary: pd.DataFrame,
    target: float | None,
    model: str,
    level: float,
    iterations: int,
    global_seed: int,
    keys: Sequence[str] | None = None,
    reps: np.ndarray | None = None,
) -> pd.DataFrame:
    """A fitted AUC(n) per (family, task, arch, recipe) with >= 2 training sizes and the smallest and largest
    size run; with a ``target``, the size at which the fit reaches it with a bootstrap interval (inf: never;
    ``stats.learning_curve_interval``: whole seeds drawn, each run's AUC on a test bootstrap replicate
    (``reps``, rows by run path in ``keys``), so it covers training runs and test patients; ``band``) and
    whether that is an extrapolation beyond the largest size, the smallest size run whose mean over seeds
    reaches it (``n_reached``, measured), and the size the same fit on the *validation* AUCs needs
    (``n_target_val``: what picks a recipe for 'fewest images', the test fit then reports it). Without a
    target (None) those columns are NaN and there is no bootstrap."""
    index = {k: i for i, k in enumerate(keys)} if keys is not None else {}
    rows = []
    for (task, family, arch, recipe), part in summary.groupby(["task", "family", "arch", "recipe"], sort=True):
        part = part[part["headline_auc"].notna()]
        n = part["n"].to_numpy(dtype=float)
        auc = part["headline_auc"].to_numpy(dtype=float)
        means = part.groupby("n")["headline_auc"].mean()
        row: dict[str, Any] = {
            "family": family,
            "task": task,
            "arch": arch,
            "recipe": recipe,
            "sizes": int(means.size),
            "runs": len(part),
            "min_n": int(means.index.min()) if means.size else None,
            "max_n": int(means.index.max()) if means.size else None,
            "best_mean_auc": float(means.max()) if means.size else math.nan,
            "target_auc": target,
        }
        if means.size < 2:
            row["status"] = "fewer than 2 training sizes"
            rows.append(row)
            continue
        rng = np.random.default_rng(derive_seed(global_seed, "learning_curve", task, arch, recipe))
        try:
            if target is None:
                fit = stats.fit_learning_curve(n, auc, model)
            else:
                run_reps = (
                    np.stack([reps[index[p]] for p in part["path"]])
                    if reps is not None and all(p in index for p in part["path"])
                    else None
                )
                fit = stats.learning_curve_interval(
                    n, auc, target, model, level, iterations, rng, seeds=part["seed"].tolist(), replicates=run_reps
                )
        except (ValueError, RuntimeError) as exc:
            row["status"] = f"fit failed: {exc}"
            rows.append(row)
            continue
        residual = auc - stats.learning_curve(n, fit)
        row.update(fit)
        row["rmse"] = float(np.sqrt(np.mean(residual**2)))
        if target is not None:
            val = part["select_auc"].to_numpy(dtype=float) if "select_auc" in part else np.full(len(part), np.nan)
            ok = ~np.isnan(val)
            try:
                val_fit = stats.fit_learning_curve(n[ok], val[ok], fit["model"])
                row["n_target_val"] = stats.n_for_auc(val_fit, target)
            except (ValueError, RuntimeError):
                row["n_target_val"] = math.nan
            row["reached"] = bool(row["best_mean_auc"] >= target)
            row["n_reached"] = float(means.index[means >= target].min()) if row["reached"] else math.nan
            beyond = math.isfinite(fit["n_target"]) and fit["n_target"] > row["max_n"]
            row["extrapolated"] = bool(beyond and not row["reached"])  # reached: a size run says so
        row["status"] = "ok"
        rows.append(row)
    columns = [
        "family", "task", "arch", "recipe", "model", "a", "b", "c", "rmse", "sizes", "runs", "min_n", "max_n",
        "best_mean_auc", "target_auc", "n_target", "n_target_lo", "n_target_hi", "band", "seeds", "n_target_val",
        "reached", "n_reached", "extrapolated", "fits", "status",
    ]  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=columns)
