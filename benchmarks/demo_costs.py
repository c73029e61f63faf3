"""Where a finished run's time went: seconds per rule (from Snakemake's benchmark files) and, for the
fine-tuning jobs, per phase (from their metrics.json ``phase_s``), with the per-job fixed cost (Snakemake
starting the process, interpreter and imports, data + model + formats, writing) against the work that
grows with the run (training, validation, test). The ratio fixed / total is the reference measured in the
same run: the share of the fine-tuning time a job pays whatever its size.

    python benchmarks/demo_costs.py [WORKDIR]      # default: the current folder, after `snakemake --cores all`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smalldl.costs import finetune_phases, phase_table, rule_seconds  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", nargs="?", default=".", help="the folder the workflow ran in")
    args = parser.parse_args(argv)
    try:
        rules = rule_seconds(args.workdir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = rules["total_s"].sum()
    print(
        f"job seconds per rule ({int(rules['jobs'].sum())} jobs, {total:.0f} s in all; "
        "wall time is less, jobs run side by side)"
    )
    print(rules.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    runs = finetune_phases(args.workdir)
    if runs.empty:
        print("\nno fine-tuning run recorded its phases (metrics.json phase_s)")
        return 0
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
