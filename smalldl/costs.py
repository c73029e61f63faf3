"""Where a finished workflow's time went: per rule from the benchmark files Snakemake writes
(``logs/benchmarks/<rule>/...tsv``, one per job), and per phase of the fine-tuning jobs from the
``phase_s`` their metrics.json record (``smalldl.jobs.train.finetune``). ``benchmarks/demo_costs.py``
prints both for a run folder; the demo's fixed costs per job were chosen from them (docs/benchmarks.md,
The demo's fixed costs).

A fine-tuning job's seconds split into:

- ``outside``: the benchmark's wall time not seen by the job's own code (Snakemake starting the process);
- ``startup``: interpreter start and imports up to the job's code (``phase_s["startup"]``);
- ``setup``, ``train``, ``validate``, ``test``, ``write``: the job's phases.

``fixed`` = outside + startup + setup + write: what a job costs whatever its training size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from smalldl import layout

PHASES = ("outside", "startup", "setup", "train", "validate", "test", "write")
FIXED = ("outside", "startup", "setup", "write")


def _benchmark_seconds(path: Path) -> float:
    table = pd.read_csv(path, sep="\t")
    if "s" not in table.columns or table.empty:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no column 's')")
    return float(table["s"].iloc[0])


def rule_seconds(workdir: str | Path) -> pd.DataFrame:
    """One row per rule: jobs, total, mean and max wall seconds, share of the total; largest first."""
    root = Path(workdir) / "logs" / "benchmarks"
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        rel = path.relative_to(root)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        rows.append({"rule": rule, "s": _benchmark_seconds(path)})
    if not rows:
        raise FileNotFoundError(f"no benchmark files under {root}: run the workflow in {workdir} first")
    jobs = pd.DataFrame(rows)
    table = jobs.groupby("rule")["s"].agg(jobs="count", total_s="sum", mean_s="mean", max_s="max").reset_index()
    table["share"] = table["total_s"] / table["total_s"].sum()
    return table.sort_values("total_s", ascending=False, ignore_index=True)


def finetune_phases(workdir: str | Path) -> pd.DataFrame:
    """One row per fine-tuning run that recorded its phases: task, n and the seconds of every phase (``PHASES``),
    ``total`` (the benchmark's wall time) and ``fixed``."""
    root = Path(workdir)
    rows = []
    for bench in sorted((root / "logs" / "benchmarks" / "finetune").rglob("n*_s*.tsv")):
        task, arch, recipe = bench.relative_to(root / "logs" / "benchmarks" / "finetune").parts[:3]
        n, seed = bench.stem[1:].split("_s")
        metrics_path = root / layout.RUNS / task / arch / recipe / f"n{n}" / f"s{seed}" / "metrics.json"
        if not metrics_path.exists():
            continue
        phases = json.loads(metrics_path.read_text()).get("phase_s") or {}
        if not phases:
            continue
        total = _benchmark_seconds(bench)
        row = {"task": task, "arch": arch, "recipe": recipe, "n": int(n), "seed": int(seed), "total": total}
        row.update({k: float(phases.get(k, 0.0)) for k in PHASES if k != "outside"})
        row["outside"] = max(0.0, total - sum(row[k] for k in PHASES if k != "outside"))
        row["fixed"] = sum(row[k] for k in FIXED)
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "arch", "recipe", "n", "seed", "total", *PHASES, "fixed"])


def phase_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per job of every phase, and its share of the fine-tuning time, per task and overall."""
    if runs.empty:
        return pd.DataFrame(columns=["task", "jobs", "phase", "mean_s", "share"])
    parts = [("all", runs), *((task, part) for task, part in runs.groupby("task", sort=True))]
    rows = []
    for task, part in parts:
        for phase in (*PHASES, "fixed", "total"):
            rows.append(
                {
                    "task": task,
                    "jobs": len(part),
                    "phase": phase,
                    "mean_s": float(part[phase].mean()),
                    "share": float(part[phase].sum() / part["total"].sum()),
                }
            )
    return pd.DataFrame(rows)
