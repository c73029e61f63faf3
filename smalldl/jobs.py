"""One function per workflow rule: read the rule's inputs, call the library, write its outputs.

The workflow_scripts/ call these with plain paths and config dicts, so each job can also be run (and
tested) without Snakemake.
"""

from __future__ import annotations

import importlib
import json
import platform
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.config import NO_SOURCE, Recipe
from smalldl.data import cache as cache_mod
from smalldl.data import splits as splits_mod
from smalldl.data.index import read_raw_index
from smalldl.errors import InputError
from smalldl.utils import atomic_path, derive_seed, write_json

GENERATORS = {
    "synthetic_chest": "smalldl.data.sources.synthetic_chest",
    "synthetic_limb": "smalldl.data.sources.synthetic_limb",
    "fractal": "smalldl.data.sources.fractal",
}


# ---------------------------------------------------------------------------------------------- data


def generate(kind: str, params: Mapping[str, Any], out_dir: str | Path, seed: int, workers: int = 1) -> None:
    """Write a synthetic dataset (PNG files + index.csv) into ``out_dir``, all or nothing."""
    module = importlib.import_module(GENERATORS[kind])
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    kwargs = dict(params)
    if "images_per_patient" in kwargs:
        kwargs["images_per_patient"] = tuple(kwargs["images_per_patient"])
    if "images_per_study" in kwargs:
        kwargs["images_per_study"] = tuple(kwargs["images_per_study"])
    try:
        module.generate(tmp, seed=seed, workers=workers, **kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"datasets.*.params for kind {kind}: {exc}") from None
    finally:
        if not (tmp / "index.csv").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def make_index(raw_index_csv: str | Path, out_parquet: str | Path) -> pd.DataFrame:
    table = read_raw_index(raw_index_csv)
    with atomic_path(out_parquet) as tmp:
        table.to_parquet(tmp, index=False)
    print(f"index: {len(table)} images of {table['patient_id'].nunique()} patients", file=sys.stderr)
    return table


def make_cache(
    index_parquet: str | Path, out_npy: str | Path, out_meta: str | Path, width: int, aspect: float | None, workers: int
) -> None:
    index = pd.read_parquet(index_parquet)
    meta = cache_mod.build_cache(index, out_npy, out_meta, width=width, aspect=aspect, workers=workers)
    print(f"cache: {meta['n']} images of {meta['height']}x{meta['width']}", file=sys.stderr)


def make_split(
    config: Mapping[str, Any],
    task_name: str,
    index_parquet: str | Path,
    excluded_from: Sequence[tuple[str | Path, Sequence[str | Path]]],
    out_parquet: str | Path,
    out_manifest: str | Path,
) -> None:
    """Split one task; ``excluded_from`` = (split.parquet, [subset csvs]) of the tasks it must avoid."""
    task = config["tasks"][task_name]
    index = pd.read_parquet(index_parquet)
    excluded: set[str] = set()
    for split_path, subset_paths in excluded_from:
        other = pd.read_parquet(split_path)
        subsets = [pd.read_csv(p, dtype={"image_id": str, "patient_id": str}) for p in subset_paths]
        excluded |= splits_mod.used_patients(other, subsets)
    table = splits_mod.task_table(index, task_name, task, excluded, seed=config["seed"])
    split, manifest = splits_mod.make_split(table, task_name, task, config["seed"], task["dataset"])
    manifest["excluded_patients"] = len(excluded)
    manifest["excluded_patients_of"] = list(task["exclude_patients_of"])
    with atomic_path(out_parquet) as tmp:
        split.to_parquet(tmp, index=False)
    write_json(out_manifest, manifest)
    print(json.dumps(manifest["counts"], indent=1), file=sys.stderr)


def make_subset(
    config: Mapping[str, Any],
    task_name: str,
    split_parquet: str | Path,
    n: int,
    seed: int,
    out_csv: str | Path,
    out_json: str | Path,
) -> None:
    task = config["tasks"][task_name]
    split = pd.read_parquet(split_parquet)
    subset, info = splits_mod.draw_subset(split, task_name, task, n, seed, config["seed"])
    with atomic_path(out_csv) as tmp:
        subset.to_csv(tmp, index=False)
    write_json(out_json, info)
    if info.get("positives_short"):
        print(
            f"WARNING: {task_name} n={n}: {info['positives_short']} positives short of half; "
            "filled with negatives (no duplicates)",
            file=sys.stderr,
        )


# ------------------------------------------------------------------------------------------ training


def _data(cache_arr: np.ndarray, info: Mapping[str, Any], table: pd.DataFrame, task: Mapping[str, Any]):
    from smalldl.train import Data

    rows = cache_mod.rows_for(dict(info), list(table["image_id"]))
    images = np.asarray(cache_arr[rows])
    labels = list(task["labels"])
    if task["type"] == "multiclass":
        targets = table[labels[0]].to_numpy(dtype=np.int64)
    else:
        targets = table[labels].to_numpy(dtype=np.float32)
    return Data(images=images, targets=targets, image_ids=list(table["image_id"]))


def _eval_part(split: pd.DataFrame, name: str) -> pd.DataFrame:
    return split[(split["split"] == name) & split["selected"]].reset_index(drop=True)


def _num_outputs(task: Mapping[str, Any], split: pd.DataFrame) -> int:
    if task["type"] == "multiclass":
        return int(split[task["labels"][0]].max()) + 1
    return len(task["labels"])


def _setup_torch(settings: Mapping[str, Any], threads: int):
    import torch

    from smalldl.train import pick_device

    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch, pick_device(settings["device"])


def _environment(device: Any) -> dict[str, Any]:
    import torch

    return {
        "device": str(device),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def pretrain(
    config: Mapping[str, Any],
    source: str,
    arch: str,
    settings: Mapping[str, Any],
    cache_npy: str | Path,
    cache_meta: str | Path,
    split_parquet: str | Path,
    out_ckpt: str | Path,
    out_metrics: str | Path,
    out_history: str | Path,
    threads: int = 1,
) -> None:
    """Pretrain ``arch`` on the source task's training split; save the body for transfer."""
    from smalldl import models
    from smalldl.train import fit

    task_name = config["sources"][source]["task"]
    task = config["tasks"][task_name]
    torch, device = _setup_torch(settings, threads)
    arr, info = cache_mod.open_cache(cache_npy, cache_meta)
    split = pd.read_parquet(split_parquet)
    train_table = _eval_part(split, "train")
    if settings.get("max_images") and len(train_table) > settings["max_images"]:
        rng = np.random.default_rng(derive_seed(config["seed"], "pretrain-cap", source))
        train_table = train_table.iloc[np.sort(rng.choice(len(train_table), settings["max_images"], replace=False))]
    train, val = _data(arr, info, train_table, task), _data(arr, info, _eval_part(split, "val"), task)
    if len(val) == 0:
        raise InputError(f"source {source}: task {task_name} has an empty validation split (val_fraction)")
    seed = derive_seed(config["seed"], "pretrain", source, arch)
    torch.manual_seed(seed)
    model = models.build(arch, _num_outputs(task, split)).to(device)
    print(
        f"pretrain {source} ({task_name}, {task['type']}) on {len(train)} images, val {len(val)}, {arch}",
        file=sys.stderr,
    )
    result = fit(model, train, val, settings, task["type"], list(task["labels"]), seed)
    meta = {
        "source": source,
        "task": task_name,
        "arch": arch,
        "seed": seed,
        "n_train": len(train),
        "n_val": len(val),
        "best_epoch": result["best_epoch"],
        "val_loss": result["val_loss"],
        "val_auc": result["val_auc"],
        "wall_time_s": result["wall_time_s"],
        "images_per_s": result["images_per_s"],
        "settings": dict(settings),
        **_environment(device),
    }
    _write_history(result["history"], out_history)
    models.save_source(model.cpu(), out_ckpt, meta)
    write_json(out_metrics, meta)


def _write_history(history: list[dict[str, Any]], path: str | Path) -> None:
    cols = ["kind", "epoch", "step", "lr", "momentum", "train_loss", "val_loss", "val_auc"]
    with atomic_path(path) as tmp:
        pd.DataFrame(history).reindex(columns=cols).to_csv(tmp, index=False)


def finetune(
    config: Mapping[str, Any],
    task_name: str,
    arch: str,
    recipe_name: str,
    n: int,
    seed: int,
    cache_npy: str | Path,
    cache_meta: str | Path,
    split_parquet: str | Path,
    subset_csv: str | Path,
    source_ckpt: str | Path | None,
    out_metrics: str | Path,
    out_predictions: str | Path,
    out_history: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """Train one (task, arch, recipe, n, seed) run and evaluate the selected model on the test set."""
    from smalldl import models
    from smalldl.train import evaluate, fit

    task = config["tasks"][task_name]
    settings = config["train"]
    recipe = Recipe.parse(recipe_name, config.get("sources", {}))
    torch, device = _setup_torch(settings, threads)
    arr, info = cache_mod.open_cache(cache_npy, cache_meta)
    split = pd.read_parquet(split_parquet)
    subset = pd.read_csv(subset_csv, dtype={"image_id": str, "patient_id": str})
    if len(subset) != n:
        raise InputError(f"training subset {subset_csv} has {len(subset)} rows, expected n={n}")
    labels = list(task["labels"])
    train = _data(arr, info, subset, task)
    val = _data(arr, info, _eval_part(split, "val"), task)
    test_table = _eval_part(split, "test")
    test = _data(arr, info, test_table, task)
    run_seed = derive_seed(config["seed"], "run", task_name, arch, recipe_name, n, seed)
    torch.manual_seed(run_seed)
    model = models.build(arch, len(labels))
    source_meta: dict[str, Any] = {}
    if recipe.source != NO_SOURCE:
        if source_ckpt is None:
            raise InputError(f"recipe {recipe_name} needs the checkpoint of source {recipe.source}")
        source_meta = models.load_source(model, source_ckpt)
    model = model.to(device)
    print(
        f"finetune {task_name} {arch} {recipe_name} n={n} seed={seed}: train {len(train)}, val {len(val)}, "
        f"test {len(test)}",
        file=sys.stderr,
    )
    result = fit(model, train, val, settings, task["type"], labels, run_seed)
    t0 = time.time()
    scores = evaluate(model, test, settings["crop"], device, task["type"], labels)
    preds = pd.DataFrame({"image_id": test.image_ids})
    for j, label in enumerate(labels):
        preds[f"y_{label}"] = test.targets.reshape(len(test), -1)[:, j].astype(np.int64)
        preds[f"p_{label}"] = scores["prob"][:, j]
    metrics = {
        "task": task_name,
        "arch": arch,
        "recipe": recipe_name,
        "schedule": recipe.schedule,
        "transfer": recipe.transfer,
        "source": recipe.source,
        "init": recipe.init,
        "n": n,
        "seed": seed,
        "run_seed": run_seed,
        "task_type": task["type"],
        "labels": labels,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "train_positives": {c: int(subset[c].sum()) for c in labels},
        "val_auc": result["val_auc"],
        "val_loss": result["val_loss"],
        "val_auc_per_label": result["val_per_label"],
        "test_auc": scores["auc"],
        "test_loss": scores["loss"],
        "test_auc_per_label": scores["per_label"],
        "selected_epoch": result["best_epoch"],
        "epochs": settings["epochs"],
        "max_lr": settings["max_lr"],
        "steps": result["steps"],
        "wall_time_s": result["wall_time_s"] + (time.time() - t0),
        "images_per_s": result["images_per_s"],
        "source_checkpoint": str(source_ckpt) if source_ckpt else None,
        "source_val_auc": source_meta.get("val_auc"),
        **_environment(device),
    }
    _write_history(result["history"], out_history)
    with atomic_path(out_predictions) as tmp:
        preds.to_parquet(tmp, index=False)
    write_json(out_metrics, metrics)
    print(
        f"test AUC {scores['auc']:.4f} (val AUC {result['val_auc']:.4f}, epoch {result['best_epoch']})", file=sys.stderr
    )
    return metrics
