"""Where one fine-tuning job's CPU time goes, phase by phase, for this checkout against a reference (a git
revision) measured in the same run, in fresh processes, alternating; and whether the two produce the same
numbers (predictions, validation predictions and history byte for byte, metrics.json less its timings).

Each process runs one demo run as rule finetune does (``smalldl.workflow.run``: the training modules
preloaded, ``smalldl.jobs.train.finetune``, the job's exit), less Snakemake's script preamble (about 0.07 s:
unpickling the ``snakemake`` object imports part of Snakemake), into a temporary folder. CPU seconds
(``time.process_time``, all threads; wall clock is noise on a shared machine) per phase:

    start      interpreter, this harness and the job module's imports (numpy, pandas, smalldl)
    imports    ``workflow.preload``: torch, timm (with torchvision), the trainer
    setup      in finetune before training: torch's mode, the cached images, the model (and its weights)
    train      training steps; fit's own work (optimizer, checkpoints, selection) under "fit"
    validate   the per-epoch validation
    test       the test and validation passes with TTA (evaluate_views)
    write      history, predictions, metrics

    python benchmarks/finetune_phases.py [WORKDIR] [--reference main] [--rounds 3]
        [--task emphysema --recipe onecycle-finetune-none-default --n 50 --seed 0] [--forked]

``--forked`` measures what a process reused across jobs would save (nothing in the workflow does it yet):
this checkout's job in fresh processes against the same job in children forked from one warm process (the
training modules preloaded once), alternating, with the same check of the numbers.

WORKDIR (default .) is a demo run's folder with the run's inputs built (cache, split, subset, source), e.g.
after ``snakemake --cores 2 runs/emphysema/efficientnet_lite0/onecycle-finetune-none-default/n50/s0/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PHASES = ("start", "imports", "setup", "fit", "train", "validate", "test", "write")
FIXED = ("start", "imports", "setup", "fit", "write")
COMPARED = ("predictions.parquet", "val_predictions.parquet", "history.csv")

# The child: one job in this process, phases timed by wrapping the functions that exist in the checkout.
CHILD = r"""
import json, os, sys, time, types
T, stack, last = {}, ["start"], [time.process_time()]
sys.path.insert(0, os.environ["BENCH_ROOT"])
spec = json.loads(os.environ["BENCH_JOB"])
from smalldl import workflow


def mark(phase):
    now = time.process_time()
    T[phase] = T.get(phase, 0.0) + now - last[0]
    last[0] = now


def wrap(mod, attr, phase):
    f = getattr(mod, attr, None)
    if f is None:
        return

    def timed(*a, **k):
        mark(stack[-1])
        stack.append(phase)
        try:
            return f(*a, **k)
        finally:
            mark(stack.pop())

    setattr(mod, attr, timed)


def done():
    mark(stack[-1])
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump({"phases": T, "cpu": time.process_time()}, fh)
    os._exit(0)


real_preload = workflow.preload


def preload(modules):
    mark(stack[-1])
    stack[-1] = "imports"
    real_preload(modules)
    from smalldl import evaluate, train
    from smalldl.jobs import train as jobs_train

    wrap(train, "fit", "fit")
    wrap(train, "train_one_epoch", "train")
    wrap(train, "evaluate", "validate")
    wrap(evaluate, "evaluate_views", "test")
    for name in ("write_history", "write_parquet", "write_json"):
        wrap(jobs_train, name, "write")
    mark("imports")
    stack[-1] = "setup"


workflow.preload = preload
workflow._exit_now = done
from smalldl.jobs import train as jobs_train


def main(smk):
    jobs_train.finetune(**spec["kwargs"])


out = spec["outputs"]
smk = types.SimpleNamespace(log=[out["log"]], output=list(out.values()), threads=spec["threads"], rule="finetune")
workflow.run(main, smk, workflow.TRAINING_MODULES)
"""

# A warm parent: the training modules preloaded once, then one forked child per job (the child's CPU from
# wait4's rusage). What a process reused across jobs would pay per job.
FORKED = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["BENCH_ROOT"])
from smalldl import workflow
os.environ.setdefault("OMP_NUM_THREADS", "1")
workflow.preload(workflow.TRAINING_MODULES)
from smalldl.jobs import train as jobs_train
parent = time.process_time()
cpu = []
for spec in json.loads(os.environ["BENCH_JOBS"]):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            jobs_train.finetune(**spec["kwargs"])
            code = 0
        finally:
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit(f"forked job failed ({status})")
    cpu.append(usage.ru_utime + usage.ru_stime)
with open(os.environ["BENCH_OUT"], "w") as fh:
    json.dump({"parent": parent, "cpu": cpu}, fh)
"""


def job_spec(workdir: Path, task: str, recipe: str, n: int, seed: int, out: Path) -> dict:
    """The arguments rule finetune gives ``smalldl.jobs.train.finetune`` for one run of the demo config."""
    sys.path.insert(0, str(ROOT))
    from smalldl import config as cfg

    config = cfg.load(workdir / "config.yaml")
    arch = config["study"]["archs"][0]
    parsed = cfg.Recipe.parse(recipe, config.get("sources", {}))
    settings = dict(cfg.recipe_settings(config, recipe))
    settings["eval_batch_size"] = settings.get("eval_batch_size") or None
    settings["checkpoint"] = bool(settings["checkpoint"])
    dataset = config["tasks"][task]["dataset"]
    width = config["preprocess"]["width"]
    source = None if parsed.source == cfg.NO_SOURCE else f"models/source/{parsed.source}/{arch}.pt"
    outputs = {
        "metrics": str(out / "metrics.json"),
        "predictions": str(out / "predictions.parquet"),
        "val_predictions": str(out / "val_predictions.parquet"),
        "history": str(out / "history.csv"),
        "log": str(out / "job.log"),
    }
    kwargs = {
        "task_name": task,
        "task": config["tasks"][task],
        "arch": arch,
        "recipe_name": recipe,
        "n": n,
        "seed": seed,
        "settings": settings,
        "global_seed": config["seed"],
        "cache_npy": f"cache/{dataset}/w{width}.npy",
        "cache_meta": f"cache/{dataset}/w{width}.json",
        "split_parquet": f"splits/{task}/split.parquet",
        "subset_csv": f"splits/{task}/train_n{n}_s{seed}.csv",
        "source_ckpt": source,
        "lr_json": None,
        "out_metrics": outputs["metrics"],
        "out_predictions": outputs["predictions"],
        "out_val_predictions": outputs["val_predictions"],
        "out_history": outputs["history"],
        "threads": int(settings["threads"]),
    }
    return {"kwargs": kwargs, "outputs": outputs, "threads": int(settings["threads"])}


def run_job(root: Path, workdir: Path, spec: dict) -> dict:
    out = Path(spec["outputs"]["log"]).parent
    out.mkdir(parents=True, exist_ok=True)
    result = out / "phases.json"
    env = {**os.environ, "BENCH_ROOT": str(root), "BENCH_JOB": json.dumps(spec), "BENCH_OUT": str(result)}
    env.pop("PYTHONPATH", None)
    subprocess.run([sys.executable, "-c", CHILD], cwd=workdir, env=env, check=True)
    return json.loads(result.read_text())


def same_numbers(a: Path, b: Path) -> list[str]:
    """What differs between two runs' outputs: files byte for byte, metrics.json less its timings."""
    diff = [name for name in COMPARED if (a / name).read_bytes() != (b / name).read_bytes()]
    timing = {"wall_time_s", "images_per_s", "phase_s", "cnn"}

    def numbers(p: Path) -> dict:
        m = json.loads((p / "metrics.json").read_text())
        cnn = {k: v for k, v in (m.get("cnn") or {}).items() if k != "phase_s"}
        return {**{k: v for k, v in m.items() if k not in timing}, "cnn": cnn}

    if numbers(a) != numbers(b):
        diff.append("metrics.json")
    return diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", nargs="?", default=".", type=Path, help="a demo run's folder (inputs built)")
    parser.add_argument("--reference", default="main", help="git revision measured against (default main)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs both once, alternating")
    parser.add_argument("--task", default="emphysema")
    parser.add_argument("--recipe", default="onecycle-finetune-none-default")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forked", action="store_true", help="fresh processes vs children of a warm one")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    if args.forked:
        return forked(workdir, args)
    with tempfile.TemporaryDirectory(prefix="finetune_phases_") as tmp:
        ref_root = Path(tmp) / "reference"
        ref_root.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.reference], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(ref_root)], input=archive.stdout, check=True)
        roots = {"reference": ref_root, "this": ROOT}
        cpu: dict[str, dict[str, list[float]]] = {name: {p: [] for p in (*PHASES, "total")} for name in roots}
        differs: set[str] = set()
        for k in range(args.rounds):
            order = list(roots) if k % 2 == 0 else list(reversed(roots))
            for name in order:
                out = Path(tmp) / f"{name}{k}"
                spec = job_spec(workdir, args.task, args.recipe, args.n, args.seed, out)
                result = run_job(roots[name], workdir, spec)
                for p in PHASES:
                    cpu[name][p].append(result["phases"].get(p, 0.0))
                cpu[name]["total"].append(result["cpu"])
            differs |= set(same_numbers(Path(tmp) / f"reference{k}", Path(tmp) / f"this{k}"))
    med = {name: {p: statistics.median(v) for p, v in phases.items()} for name, phases in cpu.items()}
    print(f"one fine-tuning job ({args.task} {args.recipe} n={args.n} seed={args.seed}): median CPU s of {args.rounds}")
    print(f"{'phase':<10}{'reference':>11}{'this':>9}{'this/ref':>10}")
    for p in (*PHASES, "total"):
        r, t = med["reference"][p], med["this"][p]
        print(f"{p:<10}{r:>11.3f}{t:>9.3f}{(t / r if r else float('nan')):>10.2f}")
    for name in roots:
        fixed = sum(med[name][p] for p in FIXED)
        print(f"{name}: fixed (start, imports, setup, fit, write) {fixed:.2f} s of {med[name]['total']:.2f} s")
    ratio = med["this"]["total"] / med["reference"]["total"]
    print(f"ratio this / reference (total CPU): {ratio:.3f}")
    print("same numbers: " + ("yes (predictions, history, metrics)" if not differs else f"NO: {sorted(differs)}"))
    return 1 if differs else 0


def forked(workdir: Path, args: argparse.Namespace) -> int:
    """This checkout's job in fresh processes vs in children forked from one warm process, alternating."""
    fresh: list[float] = []
    children: list[float] = []
    parents: list[float] = []
    differs: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="finetune_phases_") as tmp:
        for k in range(args.rounds):
            spec = job_spec(workdir, args.task, args.recipe, args.n, args.seed, Path(tmp) / f"fresh{k}")
            fork_spec = job_spec(workdir, args.task, args.recipe, args.n, args.seed, Path(tmp) / f"forked{k}")
            Path(fork_spec["outputs"]["log"]).parent.mkdir(parents=True)
            for name in ("fresh", "forked") if k % 2 == 0 else ("forked", "fresh"):
                if name == "fresh":
                    fresh.append(run_job(ROOT, workdir, spec)["cpu"])
                    continue
                result = Path(tmp) / f"forked{k}.json"
                env = {
                    **os.environ,
                    "BENCH_ROOT": str(ROOT),
                    "BENCH_JOBS": json.dumps([fork_spec]),
                    "BENCH_OUT": str(result),
                }
                env.pop("PYTHONPATH", None)
                subprocess.run([sys.executable, "-c", FORKED], cwd=workdir, env=env, check=True, capture_output=True)
                out = json.loads(result.read_text())
                parents.append(out["parent"])
                children += out["cpu"]
            differs |= set(same_numbers(Path(tmp) / f"fresh{k}", Path(tmp) / f"forked{k}"))
    f, c, p = statistics.median(fresh), statistics.median(children), statistics.median(parents)
    print(f"one fine-tuning job ({args.task} {args.recipe} n={args.n} seed={args.seed}): median CPU s of {args.rounds}")
    print(f"fresh process {f:.2f} s; forked from a warm process {c:.2f} s (the warm process: {p:.2f} s once)")
    print(f"ratio forked / fresh: {c / f:.3f}, {f - c:.2f} s saved per job")
    print("same numbers: " + ("yes (predictions, history, metrics)" if not differs else f"NO: {sorted(differs)}"))
    return 1 if differs else 0


if __name__ == "__main__":
    raise SystemExit(main())
