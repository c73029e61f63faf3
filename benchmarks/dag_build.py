"""Building the DAG of a paper-sized study (~3,000 jobs) must take <= 20 s: `snakemake -n` on a cluster's
login node plans the whole study before it submits anything.

Writes, in a temporary directory, a copy of config.yaml that keeps its synthetic datasets
(so every input of the DAG is producible, offline) and asks for the paper's grid: 4 targets (cxr14,
pneumonia, emphysema, hernia) x 2 architectures (densenet121, resnet50) x 10 recipes x 7 sizes
x 5 seeds = 2,800 fine-tuning runs, with their lr finder runs, training subsets, splits and source
models. Then times `snakemake -n -q rules` (the DAG is built, nothing runs) in a fresh process and
prints the job count, its wall-clock and CPU seconds, and their ratio to the limit. Snakemake builds the
DAG in one thread, so on an idle machine wall = CPU time; on a shared, loaded one (the load average is
printed) wall time measures the neighbours, so the limit is checked against the process's CPU time.
With --check it exits 1 when the limit is exceeded.

    python benchmarks/dag_build.py [--limit 20] [--paper] [--submissions] [--keep DIR] [--check]

--paper        also configs/paper.yaml, its datasets replaced by synthetic ones of the same names
               (ChestX-ray14 and CheXpert by the synthetic chest, MURA by the synthetic limb; tasks with
               test_split official fall back to a random test split).
--submissions  also count the SLURM submissions (sbatch calls) of the grid and of the demo study
               (config.yaml) under profiles/slurm, with and without its grouping of small jobs: one per
               group job plus one per job outside a group (the `all` target runs in the main process).
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from smalldl.data import kinds  # noqa: E402

TARGETS = {
    "cxr14": None,  # defined in config.yaml
    "emphysema": None,
    "pneumonia": {"dataset": "synth_chest", "type": "binary", "labels": ["Pneumonia"]},
    "hernia": {"dataset": "synth_chest", "type": "binary", "labels": ["Hernia"]},
}
ARCHS = ["densenet121", "resnet50"]
RECIPES = [
    "onecycle-finetune-none-default",
    "regular-finetune-none-default",
    "onecycle-finetune-imagenet-transfer",
    "regular-finetune-imagenet-transfer",
    "onecycle-extractor-imagenet-transfer",
    "onecycle-gradual-cxr13-transfer",
    "onecycle-finetune-cxr13-transfer",
    "onecycle-extractor-mura-transfer",
    "onecycle-finetune-cxr13-moments",
    "onecycle-finetune-cxr13-momentsconv",
]
SIZES = [50, 100, 200, 500, 1000, 1500, 2000]
SEEDS = [0, 1, 2, 3, 4]

#: what stands in for a real dataset in --paper, by its kind's anatomy (the synthetic datasets of config.yaml);
#: synth_chest for any other (a folder dataset's anatomy is unknown; a synthetic dataset, as before)
STAND_INS = {"chest": "synth_chest", "musculoskeletal": "synth_limb"}


def stand_in(kind_name: str) -> str:
    """The dataset of config.yaml that stands in for a dataset of kind ``kind_name``."""
    kind = kinds.KINDS[kind_name]
    return "synth_chest" if kind.synthetic else STAND_INS.get(kind.anatomy or "", "synth_chest")


def grid_config() -> dict:
    """The paper-sized grid on config.yaml's synthetic datasets: config.yaml with the grid's targets,
    sources and study (a --configfile is the whole study, so the demo's keys are copied in)."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["tasks"].update({name: spec for name, spec in TARGETS.items() if spec is not None})
    config["tasks"]["cxr13"]["exclude_patients_of"] = list(TARGETS)
    config["sources"] = {
        "imagenet": {"weights": "imagenet"},
        "cxr13": {"task": "cxr13", "recipe": "onecycle-gradual-imagenet-transfer"},
        "mura": {"task": "mura", "recipe": "onecycle-gradual-imagenet-transfer"},
    }
    config["study"].update({"targets": list(TARGETS), "archs": ARCHS, "recipes": RECIPES, "sizes": SIZES,
                            "seeds": SEEDS})  # fmt: skip
    config["study"].pop("stages", None)  # the grid lists its recipes; the demo's stages would add theirs
    config["train"]["lr_finder"] = {"enabled": True}
    return config


def paper_config(path: Path) -> dict:
    """configs/paper.yaml with every dataset replaced by config.yaml's synthetic stand-in for its kind."""
    paper = yaml.safe_load(path.read_text())
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    out = copy.deepcopy(paper)
    out["datasets"] = {}
    for name, spec in paper.get("datasets", {}).items():
        out["datasets"][name] = copy.deepcopy(demo["datasets"][stand_in(spec["kind"])])
    for task in out.get("tasks", {}).values():
        task.pop("test_split", None)  # synthetic datasets have no official test set
    return out


def snakemake(workdir: Path, *args: str) -> tuple[str, float, float]:
    """Run snakemake in a fresh process; its output, wall seconds and CPU seconds (user + system)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{out[-4000:]}")
    return out, wall, cpu


def job_count(out: str) -> int:
    m = re.search(r"^total\s+(\d+)\s*$", out, flags=re.M)
    if not m:
        raise SystemExit(f"no job stats in the dry run's output:\n{out[-2000:]}")
    return int(m.group(1))


def plan(out: str) -> list[dict]:
    """The SLURM submissions of a dry run's output: one per group job, one per job outside a group (but
    the `all` target, which runs in the main process). Each: {"group": id or None, "jobs": [{"rule": name,
    "wildcards": {...}}, ...]}."""
    submissions: list[dict] = []
    for line in out.splitlines():
        if m := re.search(r"\bGroup job (\S+) \(jobs in lexicogr\. order\):", line):
            submissions.append({"group": m.group(1), "jobs": []})
        elif m := re.match(r"(    )?(?:local)?(?:rule|checkpoint) (\w+):$", line):
            if m.group(1) and submissions and submissions[-1]["group"]:
                submissions[-1]["jobs"].append({"rule": m.group(2), "wildcards": {}})
            elif not m.group(1) and m.group(2) != "all":
                submissions.append({"group": None, "jobs": [{"rule": m.group(2), "wildcards": {}}]})
        elif (m := re.match(r"\s+wildcards: (.*)$", line)) and submissions and submissions[-1]["jobs"]:
            submissions[-1]["jobs"][-1]["wildcards"] = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
    return submissions


def submissions(out: str) -> int:
    return len(plan(out))


def count_submissions(workdir: Path, configfiles: list[str]) -> dict[str, int]:
    profile = ["--profile", str(ROOT / "profiles" / "slurm"), *configfiles]
    grouped = snakemake(workdir, "-n", *profile)[0]
    ungrouped = snakemake(workdir, "-n", *profile, "--groups", "no_such_rule=none")[0]
    return {"jobs": job_count(grouped) - 1, "ungrouped": submissions(ungrouped), "grouped": submissions(grouped)}


def measure(name: str, workdir: Path, configfiles: list[str], limit: float) -> bool:
    load = os.getloadavg()[0]
    out, wall, cpu = snakemake(workdir, "-n", "-q", "rules", *configfiles)
    jobs = job_count(out)
    finetune = re.search(r"^finetune\s+(\d+)\s*$", out, flags=re.M)
    runs = finetune.group(1) if finetune else 0
    ok = cpu <= limit
    print(
        f"{name}: {jobs} jobs ({runs} fine-tuning runs); snakemake -n (whole process) {cpu:.1f} s CPU, "
        f"{wall:.1f} s wall (load average {load:.1f} on {os.cpu_count()} CPUs); "
        f"limit {limit:g} s, ratio {cpu / limit:.2f}: {'OK' if ok else 'TOO SLOW'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--paper", action="store_true", help="also configs/paper.yaml on synthetic datasets")
    parser.add_argument("--submissions", action="store_true", help="also count SLURM submissions")
    parser.add_argument("--keep", type=Path, help="write the configs here and keep them (default: a temp dir)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a DAG takes more than --limit s of CPU")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dag_build_") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        grid = base / "grid.yaml"
        grid.write_text(yaml.safe_dump(grid_config(), sort_keys=False))
        (base / "grid").mkdir(exist_ok=True)
        ok = measure("paper-sized grid", base / "grid", ["--configfile", str(grid)], args.limit)

        if args.paper:
            paper_path = ROOT / "configs" / "paper.yaml"
            if not paper_path.exists():
                print("configs/paper.yaml: not there, skipped")
            else:
                paper = base / "paper.yaml"
                paper.write_text(yaml.safe_dump(paper_config(paper_path), sort_keys=False))
                (base / "paper").mkdir(exist_ok=True)
                ok &= measure("configs/paper.yaml (synthetic data)", base / "paper", ["--configfile", str(paper)],
                              args.limit)  # fmt: skip

        if args.submissions:
            (base / "demo").mkdir(exist_ok=True)
            for name, workdir, files in (
                ("demo (config.yaml)", base / "demo", []),
                ("paper-sized grid", base / "grid", ["--configfile", str(grid)]),
            ):
                n = count_submissions(workdir, files)
                print(
                    f"{name}: {n['jobs']} jobs -> SLURM submissions with profiles/slurm: {n['ungrouped']} "
                    f"without grouping, {n['grouped']} with"
                )
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
