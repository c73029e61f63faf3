"""Where a finished run's time went: seconds per rule (from Snakemake's benchmark files) and, for the
fine-tuning jobs, per phase (from their metrics.json ``phase_s``), with the per-job fixed cost (Snakemake
starting the process, interpreter and imports, data + model + formats, writing) against the work that
grows with the run (training, validation, test). The ratio fixed / total is the reference measured in the
same run: the share of the fine-tuning time a job pays whatever its size.

The demo's time target (issue 29: README command 1 within 8 minutes on 2 idle cores, so that a slow day
stays well under the 15 the README promises) is checked here against the run's wall time (Snakemake's
``Elapsed time``), with how busy the cores were in the same run as the reference: a run over the target
with idle cores lost time to the schedule, one with busy cores to the work.

    python benchmarks/demo_costs.py [WORKDIR]      # default: the current folder, after `snakemake --cores all`
    python benchmarks/demo_costs.py --fresh        # the demo itself, from a fresh clone of this checkout's HEAD
        [--target 480] [--check]                   # --check: exit 1 when the run took longer than --target s
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smalldl.costs import busy_share, elapsed_seconds, finetune_phases, phase_table, rule_seconds  # noqa: E402

#: README command 1's target on 2 idle cores (the README promises 15 minutes, tests/unit/test_demo_readme.py).
TARGET_S = 480.0


def fresh_run(cores: int) -> str:
    """Clone this checkout's HEAD into a temporary folder and run the demo there as README command 1 does
    (``snakemake --cores``); the folder, which is kept for a second look."""
    workdir = tempfile.mkdtemp(prefix="smalldl-demo-")
    subprocess.run(["git", "clone", "-q", str(ROOT), workdir], check=True)
    env = {**os.environ, "PYTHONPATH": workdir}
    snakemake = Path(sys.executable).with_name("snakemake")
    print(f"running the demo in {workdir} ({cores} cores) ...", flush=True)
    subprocess.run([str(snakemake), "--cores", str(cores), "--quiet", "all"], cwd=workdir, env=env, check=True)
    return workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", nargs="?", default=".", help="the folder the workflow ran in")
    parser.add_argument("--fresh", action="store_true", help="run the demo in a fresh clone of HEAD first")
    parser.add_argument("--target", type=float, default=TARGET_S, help="the wall-time target in seconds")
    parser.add_argument("--check", action="store_true", help="exit 1 when the run's wall time exceeds --target")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="the cores the run had")
    args = parser.parse_args(argv)
    if args.fresh:
        args.workdir = fresh_run(args.cores)
    try:
        rules = rule_seconds(args.workdir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = rules["total_s"].sum()
    verdict = 0
    try:
        wall = elapsed_seconds(args.workdir)
    except FileNotFoundError as exc:
        if args.check:  # a target cannot be met by a run whose time is unknown
            print(f"error: no wall time to check against the target: {exc}", file=sys.stderr)
            return 1
        wall = None
        print(f"(no wall time: {exc})")
    if wall is not None:
        met = wall <= args.target
        verdict = 0 if met or not args.check else 1
        print(
            f"wall time {wall:.0f} s (Snakemake's elapsed time), target {args.target:.0f} s: ratio "
            f"{wall / args.target:.2f}, {'met' if met else 'MISSED'}; job seconds / ({args.cores} cores x wall) = "
            f"{busy_share(total, wall, args.cores):.2f} (how busy the cores were)\n"
        )
    print(
        f"job seconds per rule ({int(rules['jobs'].sum())} jobs, {total:.0f} s in all; "
        "wall time is less, jobs run side by side)"
    )
    print(rules.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    runs = finetune_phases(args.workdir)
    if runs.empty:
        print("\nno fine-tuning run recorded its phases (metrics.json phase_s)")
        return verdict
    table = phase_table(runs)
    print(f"\nfine-tuning jobs: mean seconds per job by phase ({len(runs)} jobs)")
    wide = table.pivot(index="phase", columns="task", values="mean_s").reindex(table["phase"].unique())
    print(wide.to_string(float_format=lambda v: f"{v:.2f}"))
    overall = table[table["task"] == "all"].set_index("phase")
    fixed = overall.loc["fixed", "share"]
    print(
        f"\nfixed cost per fine-tuning job: {overall.loc['fixed', 'mean_s']:.2f} s "
        f"of {overall.loc['total', 'mean_s']:.2f} s "
        f"(ratio fixed / total = {fixed:.2f}); largest phase: "
        + max((p for p in overall.index if p not in ("fixed", "total")), key=lambda p: overall.loc[p, "mean_s"])
    )
    return verdict


if __name__ == "__main__":
    raise SystemExit(main())
