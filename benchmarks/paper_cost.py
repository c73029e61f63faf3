"""What a study costs on a GPU, from its DAG: images passed forward+backward and forward only, per phase and
architecture, and, given throughputs, GPU-hours per phase and which phase dominates.

    python benchmarks/paper_cost.py [--config configs/paper.yaml] [--stages grid|path]
        [--paper-sizes] [--manifests STUDY_DIR] [--train-images T=N] [--val-images T=N] [--test-images T=N]
        [--train-ips ARCH=IMG_S ...] [--eval-ips ARCH=IMG_S ...] [--throughputs FILE.json] [--keep DIR]

Design
------
1. The jobs. The config (default configs/paper.yaml) gets synthetic stand-ins for its datasets as
   benchmarks/dag_build.py's paper_config() gives them (a config whose datasets are all synthetic is kept as
   it is), is written to a temporary folder, and `snakemake -n` lists its jobs with their wildcards
   (dag_build.snakemake / dag_build.plan). The GPU jobs are kept: pretrain (per source, arch), lr_find (per
   task, arch, recipe) and finetune (per task, arch, recipe, n, seed).
2. The stages. A stage-wise study (study.stages) plans only its first stage: a later stage's candidates
   depend on the winner of the one before (Snakemake checkpoints), so they are not in a dry run. They are
   computed from the config and added to the dry run's jobs (duplicates once): with --stages grid (the
   default) every recipe some stage may compare, whichever winners the stages pick
   (smalldl.config.possible_stage_recipes): the worst case, more than any one study runs; with
   --stages path, per target the one path through the stages (a winner per stage) that compares the most
   recipes (ties: the most pretrained sources), i.e. the most one study runs. Each added recipe brings
   its fine-tuning runs (study sizes x seeds), its lr finder run (train.lr_finder.enabled) and the
   pretraining of the sources of its source's chain (sources.<name>.recipe).
3. The split sizes. Validation and test images per target task, and training and validation images per
   source task, exist only once the data are split. Per task and count, the first of: --train-images /
   --val-images / --test-images TASK=N; the manifests of a study folder whose splits were made on the real
   data (--manifests DIR: DIR/results/splits/{task}/manifest.json, counts.{train,val,test}.images;
   `snakemake results/splits/{task}/manifest.json` needs only the datasets' indexes); --paper-sizes, estimates of
   configs/paper.yaml's tasks on the real datasets (PAPER_SIZES below, each with where it comes from).
   A config whose datasets are all synthetic (config.yaml, configs/tiny.yaml) has its splits made for real
   in the temporary folder (its split rules, seconds to minutes) for what is still missing. A config on real
   data does not: the stand-ins' sizes (a few thousand images, other label names) say nothing of the
   study's cost, so a size still missing is an error naming it.
4. The images per job (smalldl/jobs/train.py, smalldl/jobs/pretrain.py, smalldl/train.py fit and
   lr_sweep, smalldl/evaluate.py), E = train.epochs, k = train.tta:
   - finetune (n training images, V validation, T test): training n x E forward+backward (every epoch
     passes every image; a regular-schedule run stops once its lr falls below the floor: counted at its most
     epochs, E); per-epoch validation V x E forward; after training, validation with TTA V x (1 + k) and
     test with TTA T x (1 + k) (the original view plus k augmented ones), and the plain test pass T: today
     the plain test pass and the TTA's original view are two passes over the same images with the same
     weights, and so are the selected epoch's validation pass and the validation TTA's original view (the
     "repeated" line says how many images that is). With k = 0 there is no TTA pass.
   - lr_find: lr_finder.steps optimizer steps forward+backward, each one batch of the tuning subset
     (size lr_finder.size, default the largest study size), batches drawn as fit draws them (a shuffled
     partition, cycled; a last batch of one joins the one before): the sum of the first `steps` batch
     sizes. A sweep stops early once the loss diverges: counted at all its steps.
   - pretrain (source task with N training and V validation images, pretraining settings with the
     source's overrides, E' = their epochs): training min(N, max_images) x E' forward+backward,
     per-epoch validation V x E' forward. No test, no TTA. Published ImageNet weights cost nothing.
5. GPU-hours, given training and evaluation throughputs per architecture (--train-ips / --eval-ips
   ARCH=IMG_S, or --throughputs FILE.json holding {arch: {"train": img/s, "eval": img/s}}; flags override
   the file): forward+backward images / train img/s, forward-only images / eval img/s (evaluation runs at
   batch 128 without gradients: measure it so). Without throughputs only the counts are printed. Not
   counted: each job's start-up, reading the cache, checkpoint writes, and the CPU jobs (data, radiomics).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import dag_build  # noqa: E402  (benchmarks/dag_build.py: stand-ins, dry runs)

from smalldl import config as cfg  # noqa: E402
from smalldl import layout  # noqa: E402
from smalldl.data import kinds  # noqa: E402

ROOT = dag_build.ROOT
GPU_RULES = ("pretrain", "lr_find", "finetune")


@dataclass(frozen=True)
class Phase:
    key: str
    label: str
    backward: bool  # forward+backward (training throughput) or forward only (evaluation throughput)


PHASES = (
    Phase("pretrain_train", "source pretraining: training", True),
    Phase("pretrain_val", "source pretraining: per-epoch validation", False),
    Phase("lr_find", "lr finder", True),
    Phase("finetune_train", "fine-tuning: training", True),
    Phase("finetune_val", "fine-tuning: per-epoch validation", False),
    Phase("val_tta", "final validation, TTA (original + k views)", False),
    Phase("test_plain", "test, plain (centre crop)", False),
    Phase("test_tta", "test, TTA (original + k views)", False),
)
PHASE = {p.key: p for p in PHASES}

#: configs/paper.yaml's tasks on the real data: images per split (the selected ones, as the manifests count
#: them). NIH ChestX-ray14: 112,120 images, official test_list.txt 25,596 images, train_val_list.txt 86,524;
#: test positives Pneumonia 555, Emphysema 1,093, Hernia 86 (the dataset's
#: 1,431 / 2,516 / 227 minus train_val's 876 / 1,423 / 141). Binary val/test keep every positive and as many
#: negatives; validation is 10% of the train_val patients, so its sizes are expected values (about 10% of
#: train_val's images or positives), not exact. ChestX-ray13 is capped at 75,000 images before its split
#: (tasks.cxr13.max_images), 10% of its patients to validation. CheXpert: train.csv's 191,027 frontal images
#: split as smalldl splits them (171,450 / 19,577 on the torchxrayvision copy of train.csv) plus valid.csv's
#: 202 frontal images (about 180 / 20). MURA v1.1: 36,808 + 3,197 = 40,005 images, 10% of patients to val.
PAPER_SIZES: dict[str, dict[str, int]] = {
    "cxr14": {"val": 8_650, "test": 25_596},
    "pneumonia": {"val": 176, "test": 1_110},
    "emphysema": {"val": 284, "test": 2_186},
    "hernia": {"val": 28, "test": 172},
    "cxr13": {"train": 67_500, "val": 7_500, "test": 0},
    "chexpert5": {"train": 171_630, "val": 19_600, "test": 0},
    "mura": {"train": 36_000, "val": 4_000, "test": 0},
}


# ------------------------------------------------------------------------------------------------ config


def is_synthetic(raw: Mapping[str, Any]) -> bool:
    """Whether every dataset of a config is synthetic (its splits can be made here, in seconds)."""
    return all(kinds.is_synthetic(d.get("kind")) for d in raw.get("datasets", {}).values())


def study_config(path: Path) -> dict[str, Any]:
    """The config as the dry run gets it: its datasets replaced by synthetic stand-ins (dag_build.paper_config)
    unless every one is synthetic already."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return raw if is_synthetic(raw) else dag_build.paper_config(Path(path))


# -------------------------------------------------------------------------------------------------- jobs


def job(rule: str, origin: str, **wildcards: Any) -> dict[str, Any]:
    return {"rule": rule, "wildcards": {k: str(v) for k, v in wildcards.items()}, "origin": origin}


def dry_run_jobs(workdir: Path, configfile: Path) -> list[dict[str, Any]]:
    """The GPU jobs (pretrain, lr_find, finetune) of `snakemake -n` on ``configfile`` in ``workdir``."""
    out, _, _ = dag_build.snakemake(workdir, "-n", "--configfile", str(configfile))
    jobs = [j for sub in dag_build.plan(out) for j in sub["jobs"] if j["rule"] in GPU_RULES]
    return [job(j["rule"], "dag", **j["wildcards"]) for j in jobs]


def stage_paths(config: Mapping[str, Any], target: str) -> list[list[str]]:
    """The recipes each path through the stages compares on ``target`` (one winner per stage)."""
    stages = config["study"]["stages"]
    paths: list[tuple[list[str], str | None]] = [([], None)]
    for k in range(len(stages["vary"])):
        paths = [
            (compared + candidates, winner)
            for compared, previous in paths
            for candidates in [cfg.stage_candidates(config, k, previous, target)]
            for winner in candidates
        ]
    return [list(dict.fromkeys(compared)) for compared, _ in paths]


def pretrained_chain(config: Mapping[str, Any], recipe: str) -> list[str]:
    """The pretrained sources (they have a task) a recipe's source model descends from, itself included."""
    source = cfg.Recipe.parse(recipe).source
    if source == cfg.NO_SOURCE:
        return []
    return [s for s in cfg.source_chain(config, source) if "task" in config["sources"][s]]


def stage_recipes(config: Mapping[str, Any], target: str, mode: str) -> list[str]:
    """The recipes the stages may run on ``target``: every one some stage may compare (grid), or those of the
    path through the stages that compares the most (path; ties: the most pretrained sources)."""
    if not config["study"].get("stages"):
        return []
    if mode == "grid":
        return cfg.possible_stage_recipes(config, target)
    if mode != "path":
        raise ValueError(f"unknown stages mode {mode!r} (grid or path)")
    listed = set(config["study"]["recipes"])

    def weight(path: list[str]) -> tuple[int, int]:
        new = [r for r in path if r not in listed]
        return len(new), len({s for r in new for s in pretrained_chain(config, r)})

    return max(stage_paths(config, target), key=weight)


def stage_jobs(config: Mapping[str, Any], mode: str = "grid") -> list[dict[str, Any]]:
    """The GPU jobs of the stages' recipes (see stage_recipes), computed from the config."""
    study = config["study"]
    out: list[dict[str, Any]] = []
    for target, arch in itertools.product(study["targets"], study["archs"]):
        for recipe in stage_recipes(config, target, mode):
            for n, seed in itertools.product(study["sizes"], study["seeds"]):
                out.append(job("finetune", "stages", task=target, arch=arch, recipe=recipe, n=n, seed=seed))
            if config["train"]["lr_finder"]["enabled"]:  # one sweep per recipe whatever its epochs (-e<N>)
                sweep = cfg.Recipe.parse(recipe).axes_name
                out.append(job("lr_find", "stages", task=target, arch=arch, recipe=sweep))
            out += [job("pretrain", "stages", source=s, arch=arch) for s in pretrained_chain(config, recipe)]
    return out


def merge_jobs(*groups: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs of every group, each once (the first group's origin is kept)."""
    seen: dict[tuple, dict[str, Any]] = {}
    for group in groups:
        for j in group:
            seen.setdefault((j["rule"], tuple(sorted(j["wildcards"].items()))), j)
    return list(seen.values())


# ------------------------------------------------------------------------------------------- split sizes


def needed_sizes(config: Mapping[str, Any], jobs: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """{task: {"train", "val", "test"}} that the jobs' image counts need."""
    need: dict[str, set[str]] = {}
    for j in jobs:
        wc = j["wildcards"]
        if j["rule"] == "finetune":
            need.setdefault(wc["task"], set()).update({"val", "test"})
        elif j["rule"] == "pretrain":
            need.setdefault(config["sources"][wc["source"]]["task"], set()).update({"train", "val"})
    return need


def manifest_counts(path: Path) -> dict[str, int]:
    """Images per split of a split manifest (results/splits/{task}/manifest.json: counts.{split}.images)."""
    counts = json.loads(Path(path).read_text())["counts"]
    return {name: int(entry["images"]) for name, entry in counts.items()}


def resolve_sizes(
    need: Mapping[str, set[str]],
    *,
    given: Mapping[str, Mapping[str, int]] | None = None,
    manifests: Path | None = None,
    paper: bool = False,
    split_counts: Callable[[list[str]], Mapping[str, Mapping[str, int]]] | None = None,
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, str]]]:
    """Images per (task, split) that ``need`` asks for, and where each comes from: ``given`` (flags), the
    manifests under ``manifests``/results/splits/, PAPER_SIZES (``paper``), else ``split_counts(tasks)`` (a synthetic
    config's splits, made here for real)."""
    sizes: dict[str, dict[str, int]] = {}
    origin: dict[str, dict[str, str]] = {}

    def put(task: str, counts: Mapping[str, int], label: str) -> None:
        for key in need[task]:
            if key not in sizes.setdefault(task, {}) and key in counts:
                sizes[task][key] = int(counts[key])
                origin.setdefault(task, {})[key] = label

    for task in need:
        put(task, (given or {}).get(task, {}), "given")
        if manifests is not None:
            path = Path(manifests) / layout.SPLITS / task / "manifest.json"
            if path.exists():
                put(task, manifest_counts(path), f"manifest {path}")
        if paper:
            put(task, PAPER_SIZES.get(task, {}), "paper estimate")
    missing = sorted(t for t in need if need[t] - set(sizes.get(t, {})))
    if missing and split_counts is not None:
        made = split_counts(missing)
        for task in missing:
            put(task, made[task], "split made here")
    lacking = {t: sorted(need[t] - set(sizes.get(t, {}))) for t in need if need[t] - set(sizes.get(t, {}))}
    if lacking:
        text = "; ".join(f"{t}: {', '.join(keys)}" for t, keys in sorted(lacking.items()))
        raise SystemExit(
            f"split sizes unknown ({text}): pass --train-images/--val-images/--test-images TASK=N, --manifests "
            "STUDY_DIR (splits made on the real data) or, for configs/paper.yaml, --paper-sizes"
        )
    return sizes, origin


def synthetic_split_counts(workdir: Path, configfile: Path, tasks: list[str]) -> dict[str, dict[str, int]]:
    """Make a synthetic config's splits of ``tasks`` for real (snakemake, in ``workdir``), read their manifests."""
    targets = [f"{layout.SPLITS}/{t}/manifest.json" for t in tasks]
    dag_build.snakemake(workdir, *targets, "--cores", "all", "--configfile", str(configfile))
    return {t: manifest_counts(workdir / target) for t, target in zip(tasks, targets, strict=True)}


# ------------------------------------------------------------------------------------------------ counts


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The batch sizes of one shuffled partition of n images (smalldl.train.make_batches): full batches, the
    rest last, a last batch of one joined to the one before."""
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    if len(sizes) > 1 and sizes[-1] == 1:
        last = sizes.pop()
        sizes[-1] += last
    return sizes


def lr_finder_images(n: int, batch_size: int, steps: int) -> int:
    """Images through the lr finder's ``steps`` steps on n images (partitions cycled, as lr_sweep draws)."""
    per_pass = batch_sizes(n, batch_size)
    full, rest = divmod(steps, len(per_pass))
    return full * n + sum(per_pass[:rest])


def job_images(
    j: Mapping[str, Any], config: Mapping[str, Any], sizes: Mapping[str, Mapping[str, int]]
) -> dict[str, int]:
    """Images per phase of one GPU job (the module's docstring, point 4)."""
    wc, rule = j["wildcards"], j["rule"]
    if rule == "pretrain":
        settings = cfg.source_settings(config, wc["source"])
        task = sizes[config["sources"][wc["source"]]["task"]]
        n = min(task["train"], settings["max_images"] or task["train"])
        return {"pretrain_train": n * settings["epochs"], "pretrain_val": task["val"] * settings["epochs"]}
    train = config["train"]
    if rule == "lr_find":
        finder = train["lr_finder"]
        return {"lr_find": lr_finder_images(cfg.tuning_size(config), train["batch_size"], finder["steps"])}
    if rule == "finetune":
        n, views = int(wc["n"]), train["tta"]
        epochs = cfg.recipe_settings(config, wc["recipe"])["epochs"]  # a stage's epochs (-e<N>) or train's
        val, test = sizes[wc["task"]]["val"], sizes[wc["task"]]["test"]
        tta = 1 + views if views > 0 else 0
        return {
            "finetune_train": n * epochs,
            "finetune_val": val * epochs,
            "val_tta": val * tta,
            "test_plain": test,
            "test_tta": test * tta,
        }
    raise ValueError(f"not a GPU rule: {rule}")


def job_arch(j: Mapping[str, Any]) -> str:
    return j["wildcards"]["arch"]


def count(
    jobs: Iterable[Mapping[str, Any]], config: Mapping[str, Any], sizes: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """{arch: {phase: images}} over the jobs (every phase present, in PHASES order)."""
    out: dict[str, dict[str, int]] = {}
    for j in jobs:
        per = out.setdefault(job_arch(j), {p.key: 0 for p in PHASES})
        for phase, images in job_images(j, config, sizes).items():
            per[phase] += images
    return out


def repeated_images(
    jobs: Iterable[Mapping[str, Any]], config: Mapping[str, Any], sizes: Mapping[str, Mapping[str, int]]
) -> int:
    """Forward images the TTA passes repeat: their original view, on test the plain pass's, on validation the
    selected epoch's (same images, same weights, same centre crop)."""
    if config["train"]["tta"] <= 0:
        return 0
    return sum(
        sizes[j["wildcards"]["task"]]["val"] + sizes[j["wildcards"]["task"]]["test"]
        for j in jobs
        if j["rule"] == "finetune"
    )


# -------------------------------------------------------------------------------------------- GPU-hours


def parse_pairs(values: Iterable[str], what: str) -> dict[str, float]:
    """ARCH=VALUE flags -> {arch: value} (positive numbers)."""
    out: dict[str, float] = {}
    for item in values:
        arch, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or not arch or number <= 0:
            raise SystemExit(f"{what}: {item!r} is not ARCH=IMAGES_PER_SECOND (a positive number)")
        out[arch] = number
    return out


def throughputs(
    file: Path | None, train: Mapping[str, float], evaluation: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    """{arch: {"train": img/s, "eval": img/s}} from the JSON file, then the flags."""
    out: dict[str, dict[str, float]] = {}
    if file is not None:
        for arch, spec in json.loads(Path(file).read_text()).items():
            out[arch] = {k: float(spec[k]) for k in ("train", "eval") if k in spec}
    for kind, values in (("train", train), ("eval", evaluation)):
        for arch, value in values.items():
            out.setdefault(arch, {})[kind] = value
    return out


def gpu_hours(counts: Mapping[str, Mapping[str, int]], ips: Mapping[str, Mapping[str, float]]) -> dict:
    """{arch: {phase: GPU-hours}}: forward+backward images at the training throughput, forward-only images at
    the evaluation throughput. Every arch needs both."""
    lacking = [f"{arch} {kind}" for arch in counts for kind in ("train", "eval") if ips.get(arch, {}).get(kind, 0) <= 0]
    if lacking:
        raise SystemExit(f"GPU-hours need training and evaluation img/s of every arch; missing: {', '.join(lacking)}")
    return {
        arch: {
            phase: images / ips[arch]["train" if PHASE[phase].backward else "eval"] / 3600
            for phase, images in per.items()
        }
        for arch, per in counts.items()
    }


def phase_totals(table: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {p.key: sum(per.get(p.key, 0) for per in table.values()) for p in PHASES}


def dominant(hours: Mapping[str, Mapping[str, float]]) -> str:
    """The line naming the phase with the most GPU-hours."""
    totals = phase_totals(hours)
    total = sum(totals.values())
    key = max(totals, key=lambda k: totals[k])
    share = totals[key] / total if total else 0.0
    return f"dominant phase: {PHASE[key].label}: {totals[key]:,.1f} of {total:,.1f} GPU-hours ({share:.0%})"


# ------------------------------------------------------------------------------------------------ report


def table(rows: list[list[str]], left: int = 1) -> list[str]:
    """Aligned columns: the first ``left`` and the last text column left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]


def report(
    counts: Mapping[str, Mapping[str, int]],
    hours: Mapping[str, Mapping[str, float]] | None = None,
) -> list[str]:
    """The phase table: images per arch (forward+backward or forward only) and in total; with ``hours``, the
    GPU-hours per arch and in total, their share, and the dominant phase."""
    archs = list(counts)
    images = phase_totals(counts)
    rows = [["phase", "pass", *archs, "total"]]
    for p in PHASES:
        rows.append([p.label, "fwd+bwd" if p.backward else "fwd", *(f"{counts[a][p.key]:,}" for a in archs)])
        rows[-1].append(f"{images[p.key]:,}")
    for backward, name in ((True, "total forward+backward"), (False, "total forward only")):
        keys = [p.key for p in PHASES if p.backward == backward]
        rows.append([name, "", *(f"{sum(counts[a][k] for k in keys):,}" for a in archs)])
        rows[-1].append(f"{sum(images[k] for k in keys):,}")
    lines = ["images:", *table(rows, left=2)]
    if hours is not None:
        totals = phase_totals(hours)
        total = sum(totals.values())
        rows = [["phase", *archs, "total", "share"]]
        for p in PHASES:
            rows.append([p.label, *(f"{hours[a][p.key]:,.1f}" for a in archs), f"{totals[p.key]:,.1f}"])
            rows[-1].append(f"{totals[p.key] / total:.0%}" if total else "-")
        rows.append(["total", *(f"{sum(hours[a].values()):,.1f}" for a in archs), f"{total:,.1f}", "100%"])
        lines += ["", "GPU-hours:", *table(rows), "", dominant(hours)]
    return lines


def job_summary(jobs: list[Mapping[str, Any]], mode: str, staged: bool, other_runs: int | None = None) -> str:
    """What was counted: the GPU jobs per rule (those the stages add), and how the stages were counted
    (``other_runs``: the fine-tuning runs of the other --stages mode)."""
    parts = []
    for rule in GPU_RULES:
        n = sum(j["rule"] == rule for j in jobs)
        added = sum(j["rule"] == rule and j["origin"] == "stages" for j in jobs)
        parts.append(f"{rule} {n:,}" + (f" ({added:,} of them from the stages, {mode})" if added else ""))
    line = "GPU jobs: " + ", ".join(parts)
    if staged:
        what = (
            "every recipe some stage may compare, whichever winners the stages pick: the worst case"
            if mode == "grid"
            else "per target the path through the stages that compares the most recipes"
        )
        line += f"\nstages: later stages are not in a dry run (checkpoints); counted from the config: {what}"
        if other_runs is not None:
            other = "path" if mode == "grid" else "grid"
            line += f" (--stages {other}: {other_runs:,} fine-tuning runs)"
    return line


def notes(config: Mapping[str, Any], jobs: list[Mapping[str, Any]], repeated: int) -> list[str]:
    out = []
    if any(j["rule"] == "finetune" and j["wildcards"]["recipe"].startswith("regular-") for j in jobs):
        out.append(f"regular-schedule runs counted at their most epochs ({config['train']['epochs']}); they may stop")
        out[-1] += " earlier (lr below the floor)"
    if any(j["rule"] == "finetune" and cfg.Recipe.parse(j["wildcards"]["recipe"]).epochs for j in jobs):
        out.append("runs of a stage with its own epochs (recipes named -e<N>) counted at those epochs")
    if any(j["rule"] == "lr_find" for j in jobs):
        steps = config["train"]["lr_finder"]["steps"]
        out.append(f"lr finder counted at all its {steps} steps (a sweep stops early once the loss diverges)")
    if repeated:
        out.append(
            f"repeated: {repeated:,} of the forward images are the TTA passes' original view, which repeats the "
            "plain test pass and the selected epoch's validation pass"
        )
    return out


def size_lines(sizes: Mapping[str, Mapping[str, int]], origin: Mapping[str, Mapping[str, str]]) -> list[str]:
    rows = [["task", "from", "train", "val", "test"]]
    for task in sorted(sizes):
        cells = [f"{sizes[task][k]:,}" if k in sizes[task] else "-" for k in ("train", "val", "test")]
        rows.append([task, ", ".join(sorted(set(origin[task].values()))), *cells])
    return ["split sizes (images):", *table(rows, left=2)]


# -------------------------------------------------------------------------------------------------- main


def sizes_flags(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    given: dict[str, dict[str, int]] = {}
    for key, values in (("train", args.train_images), ("val", args.val_images), ("test", args.test_images)):
        for task, value in parse_pairs(values, f"--{key}-images").items():
            if value != int(value):
                raise SystemExit(f"--{key}-images {task}: {value} is not a whole number of images")
            given.setdefault(task, {})[key] = int(value)
    return given


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "paper.yaml", help="the study's config file")
    p.add_argument("--stages", choices=("grid", "path"), default="grid", help="stage recipes counted (see above)")
    p.add_argument("--paper-sizes", action="store_true", help="PAPER_SIZES: configs/paper.yaml on the real data")
    p.add_argument("--manifests", type=Path, help="a study folder whose results/splits/{task}/manifest.json exist")
    for key in ("train", "val", "test"):
        p.add_argument(f"--{key}-images", action="append", default=[], metavar="TASK=N", help=f"{key} images")
    p.add_argument("--train-ips", action="append", default=[], metavar="ARCH=IMG_S", help="training img/s")
    p.add_argument("--eval-ips", action="append", default=[], metavar="ARCH=IMG_S", help="evaluation img/s")
    p.add_argument("--throughputs", type=Path, help='JSON {arch: {"train": img/s, "eval": img/s}}')
    p.add_argument("--keep", type=Path, help="the folder for the config and the dry run (default: a temp dir)")
    return p


@dataclass
class Estimate:
    """A study's GPU jobs, the split sizes they were counted with, and the images per arch and phase."""

    config: dict[str, Any]  # validated (the schema's defaults filled in), datasets as the dry run had them
    jobs: list[dict[str, Any]]  # {"rule", "wildcards", "origin": "dag" (the dry run) or "stages" (the config)}
    sizes: dict[str, dict[str, int]]
    origin: dict[str, dict[str, str]]
    counts: dict[str, dict[str, int]]
    other_runs: int  # fine-tuning runs with the other --stages mode


def estimate(
    config_path: Path,
    *,
    stages: str = "grid",
    given: Mapping[str, Mapping[str, int]] | None = None,
    manifests: Path | None = None,
    paper: bool = False,
    keep: Path | None = None,
) -> Estimate:
    """Points 1 to 4 of the module's docstring for one config file (``keep``: the folder of the dry run)."""
    with tempfile.TemporaryDirectory(prefix="paper_cost_") as tmp:
        base = Path(keep or tmp)
        (base / "study").mkdir(parents=True, exist_ok=True)
        synthetic = is_synthetic(yaml.safe_load(Path(config_path).read_text()) or {})
        raw = study_config(config_path)
        configfile = base / "config.yaml"
        configfile.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = cfg.validate(copy.deepcopy(raw))
        planned = dry_run_jobs(base / "study", configfile)
        jobs = merge_jobs(planned, stage_jobs(config, stages))
        other = merge_jobs(planned, stage_jobs(config, "path" if stages == "grid" else "grid"))

        def made_here(tasks: list[str]) -> Mapping[str, Mapping[str, int]]:
            return synthetic_split_counts(base / "study", configfile, tasks)

        sizes, origin = resolve_sizes(
            needed_sizes(config, jobs),
            given=given,
            manifests=manifests,
            paper=paper,
            split_counts=made_here if synthetic else None,
        )
    return Estimate(
        config=config,
        jobs=jobs,
        sizes=sizes,
        origin=origin,
        counts=count(jobs, config, sizes),
        other_runs=sum(j["rule"] == "finetune" for j in other),
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    train_ips, eval_ips = parse_pairs(args.train_ips, "--train-ips"), parse_pairs(args.eval_ips, "--eval-ips")
    ips = throughputs(args.throughputs, train_ips, eval_ips)
    est = estimate(
        args.config,
        stages=args.stages,
        given=sizes_flags(args),
        manifests=args.manifests,
        paper=args.paper_sizes,
        keep=args.keep,
    )
    config, study = est.config, est.config["study"]
    hours = gpu_hours(est.counts, ips) if ips else None
    shown = args.config.resolve().relative_to(ROOT) if args.config.resolve().is_relative_to(ROOT) else args.config
    print(
        f"{shown}: {len(study['targets'])} targets x {len(study['archs'])} archs, sizes {study['sizes']}, "
        f"{len(study['seeds'])} seeds, {config['train']['epochs']} epochs, TTA {config['train']['tta']} views"
    )
    print(job_summary(est.jobs, args.stages, bool(study.get("stages")), est.other_runs))
    print("\n".join(["", *size_lines(est.sizes, est.origin), "", *report(est.counts, hours)]))
    extra = notes(config, est.jobs, repeated_images(est.jobs, config, est.sizes))
    if extra:
        print("\n" + "\n".join(f"- {line}" for line in extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
