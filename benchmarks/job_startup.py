"""A training job's fixed cost outside its work: process start, imports, one training step of
EfficientNet-Lite0 and the exit, as our jobs do it against the plain way, in fresh processes, alternating
(the machine's noise falls on both).

plain: ``import torch, timm``; deterministic mode; build the model; one step; the interpreter's normal exit
       (module teardown and its collections).
ours:  ``smalldl.workflow.preload`` (torch, timm and the trainer imported with the collector off, then
       frozen); the same mode, model and step; ``smalldl.workflow._exit_now`` (threads joined and exit
       handlers run, no teardown).

Prints the median wall seconds of each, of ours with one of its two changes undone, and the ratio
plain / this (the reference is measured in the same run). The demo's 108 fine-tuning jobs pay this once each;
on a 2-core machine running two jobs and Snakemake the gap is larger than on an idle one.

    python benchmarks/job_startup.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BODY = """
import sys
sys.path.insert(0, {root!r})
{imports}
import torch
torch.set_num_threads(1)
{deterministic}
from smalldl.models import build
model = build("efficientnet_lite0", num_outputs=1)
opt = torch.optim.AdamW(model.parameters())
x = torch.randn(16, 3, 48, 48)
model(x).sum().backward()
opt.step()
{exit}
"""

VARIANTS = {
    "plain": {
        "imports": "import torch, timm",
        "deterministic": "torch.use_deterministic_algorithms(True, warn_only=True)",
        "exit": "",
    },
    "ours": {
        "imports": "from smalldl import workflow\nworkflow.preload(workflow.TRAINING_MODULES)",
        "deterministic": "torch.use_deterministic_algorithms(True, warn_only=True)",
        "exit": "workflow._exit_now()",
    },
}
# ours with one of its three changes undone: what each is worth
VARIANTS["ours, normal exit"] = {**VARIANTS["ours"], "exit": ""}
VARIANTS["ours, collector on"] = {
    **VARIANTS["ours"],
    "imports": "from smalldl import workflow\nimport torch, timm, smalldl.train, smalldl.evaluate",
}


def run_once(variant: str) -> float:
    code = BODY.format(root=str(ROOT), **VARIANTS[variant])
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5, help="rounds; each runs every variant once")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    run_once("plain")  # warm the file cache
    for k in range(args.pairs):
        order = list(VARIANTS) if k % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            times[name].append(run_once(name))
    plain = statistics.median(times["plain"])
    print(f"median wall seconds of a fresh process over {args.pairs} rounds (start, imports, one step, exit):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<24} {median:6.2f} s   plain / this = {plain / median:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
