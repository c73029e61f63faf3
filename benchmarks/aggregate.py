"""Aggregating a paper-sized grid of runs (~3,000 metrics.json) must take <= 10 s.

Generates that many run outputs in the schema the training jobs write (4 targets x 2 archs x 12 recipes x
8 sizes x 4 seeds = 3,072 by default), then times, in one process on the same warm files:

- smalldl.jobs.results.aggregate (rule aggregate's job): read every metrics.json, flatten, write
  summary.parquet and summary.csv;
- a reference: a plain pandas loop (pd.json_normalize per file, pd.concat), same writes.

Prints both times and the ratio; exits 1 if the aggregation takes longer than --limit seconds.

    python benchmarks/aggregate.py [--runs 3072] [--workdir DIR] [--limit 10]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smalldl import layout  # noqa: E402
from smalldl.data.sources import nih  # noqa: E402
from smalldl.jobs import results  # noqa: E402

TASKS = {
    "cxr14": list(nih.LABELS),
    "emphysema": ["Emphysema"],
    "pneumonia": ["Pneumonia"],
    "hernia": ["Hernia"],
}  # fmt: skip
ARCHS = ["densenet121", "resnet50"]
RECIPES = [
    "onecycle-finetune-imagenet-transfer",
    "regular-finetune-imagenet-transfer",
    "onecycle-extractor-imagenet-transfer",
    "onecycle-gradual-imagenet-transfer",
    "onecycle-finetune-none-default",
    "onecycle-finetune-mura-transfer",
    "onecycle-finetune-chexpert-transfer",
    "onecycle-finetune-cxr13-transfer",
    "onecycle-finetune-cxr13-moments",
    "onecycle-finetune-cxr13-momentsconv",
    "onecycle-gradual-cxr13-transfer",
    "regular-gradual-cxr13-transfer",
]
SIZES = [50, 100, 200, 300, 500, 1000, 1500, 2000]
SEEDS = [0, 1, 2, 3]


def metrics(task: str, arch: str, recipe: str, n: int, seed: int, rng: np.random.Generator) -> dict:
    schedule, transfer, source, init = recipe.split("-")
    labels = TASKS[task]
    per = {lab: float(rng.uniform(0.5, 0.95)) for lab in labels}
    per_tta = {lab: min(1.0, v + 0.01) for lab, v in per.items()}
    return {
        "family": "cnn", "task": task, "arch": arch, "recipe": recipe, "schedule": schedule,
        "transfer": transfer, "source": source, "init": init, "n": n, "seed": seed,
        "run_seed": int(rng.integers(2**31)), "task_type": "multilabel" if len(labels) > 1 else "binary",
        "labels": labels, "n_train": n, "n_val": 250, "n_test": 2000,
        "train_positives": {lab: n // 2 for lab in labels},
        "val_auc": float(np.mean(list(per.values()))), "val_auc_tta": float(np.mean(list(per_tta.values()))),
        "val_loss": 0.5, "val_auc_per_label": per,
        "test_auc": float(np.mean(list(per.values()))), "test_auc_tta": float(np.mean(list(per_tta.values()))),
        "test_loss": 0.6, "test_auc_per_label": per, "test_auc_per_label_tta": per_tta,
        "selected_epoch": 7, "epochs": 20, "epochs_run": 20, "max_lr": 0.001, "lr_source": "finder",
        "steps": 20 * n // 16, "wall_time_s": float(rng.uniform(30, 900)), "images_per_s": 350.0,
        "device": "cuda", "torch": "2.14.1", "source_checkpoint": f"{layout.MODELS}/source/{source}/{arch}.pt",
        "source_val_auc": 0.8,
    }  # fmt: skip


def generate(root: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    grid = itertools.product(TASKS, ARCHS, RECIPES, SIZES, SEEDS)
    paths = []
    for task, arch, recipe, n, seed in itertools.islice(itertools.cycle(grid), count):
        run = root / layout.RUNS / task / arch / recipe / f"n{n}" / f"s{seed + 10 * (len(paths) // 3072)}"
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.json").write_text(json.dumps(metrics(task, arch, recipe, n, seed, rng), indent=2))
        paths.append(run / "metrics.json")
    return paths


def reference(paths: list[Path], out: Path) -> pd.DataFrame:
    """The plain way: one small DataFrame per file, concatenated."""
    frames = []
    for path in paths:
        with open(path) as fh:
            frames.append(pd.json_normalize(json.load(fh)))
    table = pd.concat(frames, ignore_index=True)
    table["labels"] = table["labels"].map(";".join)
    table.to_parquet(out / "reference.parquet", index=False)
    table.to_csv(out / "reference.csv", index=False)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3072)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--limit", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        paths = generate(root, args.runs)
        print(f"generated {len(paths)} runs in {time.perf_counter() - t0:.1f}s under {root}")
        t0 = time.perf_counter()
        ref = reference(paths, root)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the job logs the mean over seeds of every unit
            table = results.aggregate(
                metrics=paths,
                out_parquet=root / "summary.parquet",
                out_csv=root / "summary.csv",
                metric="test_auc_tta",
                select_on="val_auc_tta",
            )
        t_ours = time.perf_counter() - t0
        assert len(table) == len(ref) == len(paths), (len(table), len(ref))
        assert np.allclose(table["test_auc"].sort_values(), ref["test_auc"].sort_values())
        ok = t_ours <= args.limit
        print(
            f"aggregate {len(paths)} runs: {t_ours:.2f}s (smalldl.jobs.results.aggregate, {table.shape[1]} columns) vs "
            f"{t_ref:.2f}s (plain pandas loop): ratio {t_ref / t_ours:.1f}x; limit {args.limit:.0f}s: "
            f"{'OK' if ok else 'FAIL'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
