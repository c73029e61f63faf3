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

``elapsed_seconds`` reads the run's wall time from Snakemake's log (its ``Elapsed time``); with the job
seconds it gives how busy the cores were (``busy_share``), the demo's time target is checked against it.
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


def elapsed_seconds(workdir: str | Path) -> float:
    """The wall seconds of the latest complete Snakemake run in ``workdir``: the ``Elapsed time`` its log
    (``.snakemake/log/*.snakemake.log``) ends with, from the workflow's start to its end."""
    import datetime
    import re

    logs = sorted((Path(workdir) / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True)
    for log in logs:  # newest first (the names are start times)
        match = re.search(r"^Elapsed time: (?:(\d+) days?, )?(\d+):(\d+):(\d+(?:\.\d+)?)$", log.read_text(), re.M)
        if match:
            days, hours, minutes, seconds = match.groups()
            return datetime.timedelta(
                days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=float(seconds)
            ).total_seconds()
    raise FileNotFoundError(f"no complete Snakemake run logged under {Path(workdir) / '.snakemake' / 'log'}")


def busy_share(job_seconds: float, wall_seconds: float, cores: int) -> float:
    """How busy ``cores`` were during a run: the jobs' wall seconds over cores x the run's wall seconds (1:
    a job on every core all the time; a job with several threads counts once, so this is a lower bound)."""
    return job_seconds / (cores * wall_seconds) if wall_seconds > 0 and cores > 0 else float("nan")


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
