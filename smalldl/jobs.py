"""One function per workflow rule: read the rule's inputs, call the library, write its outputs.

The workflow_scripts/ call these with plain paths and config dicts, so each job can also be run (and
tested) without Snakemake.
"""

from __future__ import annotations

import hashlib
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


def fetch_dataset(
    dataset: str, spec: Mapping[str, Any], out_json: str | Path, retries: int | None = None, backoff: float = 2.0
) -> dict[str, Any]:
    """rule fetch_nih: download ChestX-ray14 into raw/{dataset}/ or verify a local copy; record where."""
    from smalldl.data.sources import nih

    if spec["kind"] != "nih":
        raise InputError(f"datasets.{dataset}: only kind nih is fetched (kind {spec['kind']})")
    params = dict(spec.get("params") or {})
    default_root = Path(out_json).parent
    return nih.fetch(
        dataset,
        params,
        default_root,
        out_json,
        retries=int(params.get("retries", 5)) if retries is None else retries,
        backoff=backoff,
    )


def index_dataset(
    dataset: str,
    spec: Mapping[str, Any],
    out_parquet: str | Path,
    raw: str | Path | None = None,
    fetched: str | Path | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """rule index, any dataset kind: the uniform index table (local copies are indexed in place)."""
    from smalldl.data.index import build_index

    table = build_index(dataset, spec, raw=raw, fetched=fetched, check_files=check_files)
    with atomic_path(out_parquet) as tmp:
        table.to_parquet(tmp, index=False)
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
        excluded |= splits_mod.used_patients(other, subsets, task.get("exclude_patients_scope", "used"))
    selection: dict[str, Any] = {}
    table = splits_mod.task_table(index, task_name, task, excluded, seed=config["seed"], info=selection)
    split, manifest = splits_mod.make_split(table, task_name, task, config["seed"], task["dataset"])
    manifest["excluded_patients"] = len(excluded)
    manifest["excluded_patients_of"] = list(task["exclude_patients_of"])
    manifest["selection"] = selection
    if selection.get("uncertain_masked"):
        masked = ", ".join(f"{c} {k}" for c, k in selection["uncertain_masked"].items())
        print(f"{task_name}: uncertain labels masked (left out of loss and AUC): {masked}", file=sys.stderr)
    for name, labels in manifest.get("labels_without_positives", {}).items():
        print(f"WARNING: {task_name}: no positive image in the {name} split for {', '.join(labels)}", file=sys.stderr)
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


def _file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    """Pretrain ``arch`` on the source task's training split (one-cycle, all layers); save the body."""
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
    checkpoint = f"{out_ckpt}.resume" if settings.get("checkpoint", True) else None
    signature = json.dumps({"settings": dict(settings), "seed": seed, "n": len(train)}, sort_keys=True, default=str)
    labels = list(task["labels"])
    result = fit(model, train, val, settings, task["type"], labels, seed, checkpoint=checkpoint, signature=signature)
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
        "selected_state_sha256": result["selected_state_sha256"],
        "wall_time_s": result["wall_time_s"],
        "images_per_s": result["images_per_s"],
        "settings": dict(settings),
        **_environment(device),
    }
    _write_history(result["history"], out_history)
    models.save_source(model.cpu(), out_ckpt, meta)
    write_json(out_metrics, meta)
    if checkpoint:
        Path(checkpoint).unlink(missing_ok=True)


def imagenet_weights(
    config: Mapping[str, Any], source: str, arch: str, out_ckpt: str | Path, out_metrics: str | Path
) -> None:
    """Write the ImageNet weights of ``arch`` as a source checkpoint (same format as pretrain's):
    sources.<source>.files.<arch> if given, the packaged EfficientNet-Lite0 weights, or torchvision's."""
    from smalldl import models

    local = config["sources"][source].get("files", {}).get(arch)
    body, origin = models.imagenet_body_state(arch, local, source)
    meta = {"source": source, "weights": "imagenet", "arch": arch, "origin": origin, "tensors": len(body)}
    if Path(origin).is_file():
        meta["origin_sha256"] = _file_sha256(origin)
    models.save_body(arch, body, out_ckpt, meta)
    write_json(out_metrics, meta)
    print(f"ImageNet weights of {arch} from {origin}: {len(body)} tensors", file=sys.stderr)


HISTORY_COLUMNS = [
    "kind",
    "epoch",
    "step",
    "lr",
    "lr_group1",
    "lr_group2",
    "lr_group3",
    "momentum",
    "trainable",
    "train_loss",
    "val_loss",
    "val_auc",
]


def _write_history(history: list[dict[str, Any]], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history).reindex(columns=HISTORY_COLUMNS).to_csv(tmp, index=False)


def _run_model(
    config: Mapping[str, Any],
    task: Mapping[str, Any],
    arch: str,
    recipe: Recipe,
    source_ckpt: str | Path | None,
    seed: int,
):
    """A model for one recipe: new head, body initialised as the recipe says."""
    import torch

    from smalldl import models
    from smalldl.init import initialise

    torch.manual_seed(seed)
    model = models.build(arch, len(task["labels"]))
    source_meta: dict[str, Any] = {}
    body_state = None
    if recipe.source != NO_SOURCE:
        if source_ckpt is None:
            raise InputError(f"recipe {recipe.name} needs the checkpoint of source {recipe.source}")
        body_state, source_meta = models.read_source(source_ckpt, arch)
    try:
        init_info = initialise(model, recipe.init, body_state, derive_seed(seed, "init"))
    except RuntimeError as exc:
        raise InputError(f"source checkpoint {source_ckpt} does not fit {arch}: {str(exc)[:300]}") from None
    return model, source_meta, init_info


def _target_data(config, task_name, split_parquet, subset_csv, cache_npy, cache_meta, n=None):
    task = config["tasks"][task_name]
    arr, info = cache_mod.open_cache(cache_npy, cache_meta)
    split = pd.read_parquet(split_parquet)
    subset = pd.read_csv(subset_csv, dtype={"image_id": str, "patient_id": str})
    if n is not None and len(subset) != n:
        raise InputError(f"training subset {subset_csv} has {len(subset)} rows, expected n={n}")
    train = _data(arr, info, subset, task)
    val = _data(arr, info, _eval_part(split, "val"), task)
    test = _data(arr, info, _eval_part(split, "test"), task)
    return subset, train, val, test


def lr_find(
    config: Mapping[str, Any],
    task_name: str,
    arch: str,
    recipe_name: str,
    cache_npy: str | Path,
    cache_meta: str | Path,
    split_parquet: str | Path,
    subset_csv: str | Path,
    source_ckpt: str | Path | None,
    out_csv: str | Path,
    out_json: str | Path,
    out_png: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """The lr finder of one (task, arch, recipe) at the tuning size: sweep, chosen lr, plot."""
    from smalldl.train import lr_sweep

    task = config["tasks"][task_name]
    settings = config["train"]
    recipe = Recipe.parse(recipe_name, config.get("sources", {}))
    torch, device = _setup_torch(settings, threads)
    subset, train, _, _ = _target_data(config, task_name, split_parquet, subset_csv, cache_npy, cache_meta)
    seed = derive_seed(config["seed"], "lr_find", task_name, arch, recipe_name)
    model, _, _ = _run_model(config, task, arch, recipe, source_ckpt, seed)
    model = model.to(device)
    print(f"lr finder {task_name} {arch} {recipe_name} on {len(train)} images", file=sys.stderr)
    sweep = lr_sweep(model, train, settings, task["type"], seed, transfer=recipe.transfer)
    table = pd.DataFrame(sweep["rows"])
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    info = {
        "task": task_name,
        "arch": arch,
        "recipe": recipe_name,
        "n": len(train),
        "subset": str(subset_csv),
        "rule": sweep["rule"],
        "lr": sweep["lr"],
        "seed": seed,
        "settings": dict(settings["lr_finder"]),
    }
    _plot_sweep(table, sweep["lr"], f"{task_name} {arch} {recipe_name} (n={len(train)})", out_png)
    write_json(out_json, info)
    print(f"lr finder ({sweep['rule']}): max_lr = {sweep['lr']:.3g}", file=sys.stderr)
    return info


def _plot_sweep(table: pd.DataFrame, chosen: float, title: str, out_png: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(table["lr"], table["loss"], alpha=0.3, label="loss")
    ax.plot(table["lr"], table["smoothed_loss"], label="smoothed loss")
    ax.axvline(chosen, color="red", linestyle="--", label=f"chosen {chosen:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


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
    lr_json: str | Path | None = None,
) -> dict[str, Any]:
    """Train one (task, arch, recipe, n, seed) run and evaluate the selected model on the test set,
    with and without test-time augmentation. A killed run resumes from ``resume.pt`` in its folder."""
    from smalldl.train import evaluate, fit

    task = config["tasks"][task_name]
    settings = config["train"]
    recipe = Recipe.parse(recipe_name, config.get("sources", {}))
    torch, device = _setup_torch(settings, threads)
    subset, train, val, test = _target_data(config, task_name, split_parquet, subset_csv, cache_npy, cache_meta, n)
    labels = list(task["labels"])
    run_seed = derive_seed(config["seed"], "run", task_name, arch, recipe_name, n, seed)
    max_lr, lr_source = float(settings["max_lr"]), "config"
    if lr_json is not None:
        max_lr, lr_source = float(json.loads(Path(lr_json).read_text())["lr"]), "finder"
    model, source_meta, init_info = _run_model(config, task, arch, recipe, source_ckpt, run_seed)
    model = model.to(device)
    print(
        f"finetune {task_name} {arch} {recipe_name} n={n} seed={seed}: train {len(train)}, val {len(val)}, "
        f"test {len(test)}, max_lr {max_lr:.3g} ({lr_source})",
        file=sys.stderr,
    )
    run_dir = Path(out_metrics).parent
    checkpoint = run_dir / "resume.pt" if settings["checkpoint"] else None
    signature = json.dumps(
        {
            "settings": dict(settings),
            "recipe": recipe_name,
            "run_seed": run_seed,
            "max_lr": max_lr,
            "train": list(train.image_ids),
            "source": _file_sha256(source_ckpt) if source_ckpt else None,
        },
        sort_keys=True,
        default=str,
    )
    result = fit(
        model,
        train,
        val,
        settings,
        task["type"],
        labels,
        run_seed,
        schedule=recipe.schedule,
        transfer=recipe.transfer,
        max_lr=max_lr,
        checkpoint=checkpoint,
        signature=signature,
    )
    t0 = time.time()
    aug = {"flip": settings["flip"], "rotate": settings["rotate"], "seed": derive_seed(run_seed, "tta")}
    crop, kind = settings["crop"], task["type"]
    test_sc = evaluate(model, test, crop, device, kind, labels)
    tta_on = settings["tta"] > 0
    test_tta = evaluate(model, test, crop, device, kind, labels, tta=settings["tta"], **aug) if tta_on else None
    val_tta = evaluate(model, val, crop, device, kind, labels, tta=settings["tta"], **aug) if tta_on else None
    preds = pd.DataFrame({"image_id": test.image_ids})
    for j, label in enumerate(labels):
        preds[f"y_{label}"] = test.targets.reshape(len(test), -1)[:, j].astype(np.int64)
        preds[f"p_{label}"] = test_sc["prob"][:, j]
        if test_tta is not None:
            preds[f"p_tta_{label}"] = test_tta["prob"][:, j]
    metrics = {
        "family": "cnn",
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
        "train_positives": splits_mod.positive_counts(subset, labels),
        "val_auc": result["val_auc"],
        "val_auc_tta": val_tta["auc"] if val_tta else None,
        "val_loss": result["val_loss"],
        "val_auc_per_label": result["val_per_label"],
        "test_auc": test_sc["auc"],
        "test_auc_tta": test_tta["auc"] if test_tta else None,
        "test_loss": test_sc["loss"],
        "test_auc_per_label": test_sc["per_label"],
        "test_auc_per_label_tta": test_tta["per_label"] if test_tta else None,
        "tta_views": settings["tta"],
        "selected_epoch": result["best_epoch"],
        "selected_state_sha256": result["selected_state_sha256"],
        "epochs": settings["epochs"],
        "epochs_run": result["epochs_run"],
        "max_lr": max_lr,
        "lr_source": lr_source,
        "steps": result["steps"],
        "wall_time_s": result["wall_time_s"] + (time.time() - t0),
        "images_per_s": result["images_per_s"],
        "source_checkpoint": str(source_ckpt) if source_ckpt else None,
        "source_val_auc": source_meta.get("val_auc"),
        "init_info": init_info,
        **_environment(device),
    }
    _write_history(result["history"], out_history)
    with atomic_path(out_predictions) as tmp:
        preds.to_parquet(tmp, index=False)
    if settings["save_model"]:
        with atomic_path(run_dir / "model.pt") as tmp:
            state = model.cpu().state_dict()
            torch.save({"arch": arch, "state": state, "sha256": result["selected_state_sha256"]}, tmp)
    write_json(out_metrics, metrics)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    tta_text = f", with TTA {test_tta['auc']:.4f}" if test_tta else ""
    print(
        f"test AUC {test_sc['auc']:.4f}{tta_text} (val AUC {result['val_auc']:.4f}, epoch {result['best_epoch']})",
        file=sys.stderr,
    )
    return metrics


# ----------------------------------------------------------------------------------------- stages


def select_stage(
    config: Mapping[str, Any],
    task_name: str,
    arch: str,
    stage: int,
    previous: str | None,
    metrics_paths: Sequence[str | Path],
    out_json: str | Path,
) -> dict[str, Any]:
    """Pick the winner of one stage on validation AUC averaged over sizes and seeds (never test)."""
    from smalldl.stages import select_winner

    spec = config["study"]["stages"]
    rows = [json.loads(Path(p).read_text()) for p in metrics_paths]
    candidates = list(dict.fromkeys(row["recipe"] for row in rows))
    result = select_winner(rows, candidates, spec["select_on"])
    out = {
        "task": task_name,
        "arch": arch,
        "stage": stage,
        "axis": spec["vary"][stage]["axis"],
        "previous": previous,
        **result,
    }
    write_json(out_json, out)
    print(f"stage {stage} ({out['axis']}): winner {out['winner']} {json.dumps(out['scores'])}", file=sys.stderr)
    return out


# ----------------------------------------------------------------------------------------- radiomics
# Issue 5: rules radiomics_features, radiomics_model, radiomics_best (rules/radiomics.smk). The logic
# lives in smalldl/radiomics.py.


def radiomics_features(
    featureset: str,
    cache_npy: str | Path,
    cache_meta: str | Path,
    split_parquets: Sequence[str | Path],
    subset_csvs: Sequence[str | Path],
    images: str,
    settings: Mapping[str, Any],
    out_parquet: str | Path,
    threads: int = 1,
) -> pd.DataFrame:
    """Features of a dataset's cached images, once per image, into ``out_parquet`` (image_id + features).

    ``images="used"``: only the images some radiomics model sees (val/test of the given splits and the
    training subsets); ``"all"`` or no splits given: every image of the cache.
    """
    from smalldl import radiomics

    arr, info = cache_mod.open_cache(cache_npy, cache_meta)
    ids = [str(i) for i in info["image_ids"]]
    if images == "used" and (split_parquets or subset_csvs):
        splits = [pd.read_parquet(p) for p in split_parquets]
        subsets = [pd.read_csv(p, dtype={"image_id": str, "patient_id": str}) for p in subset_csvs]
        rows = cache_mod.rows_for(info, radiomics.used_image_ids(ids, splits, subsets))
    else:
        rows = np.arange(len(ids))
    print(f"radiomics {featureset}: {len(rows)} of {len(ids)} images ({images}), {threads} worker(s)", file=sys.stderr)
    t0 = time.time()
    table = radiomics.extract(arr, ids, featureset, settings, workers=threads, rows=rows)
    with atomic_path(out_parquet) as tmp:
        table.to_parquet(tmp, index=False)
    elapsed = time.time() - t0
    rate = len(rows) / elapsed if elapsed > 0 else float("inf")
    print(f"radiomics {featureset}: {table.shape[1] - 1} features, {rate:.1f} img/s", file=sys.stderr)
    return table


def radiomics_model(
    config: Mapping[str, Any],
    task_name: str,
    featureset: str,
    model: str,
    n: int,
    seed: int,
    settings: Mapping[str, Any],
    features_parquet: str | Path,
    split_parquet: str | Path,
    subset_csv: str | Path,
    out_metrics: str | Path,
    out_predictions: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """Tune ``model`` on the (n, seed) training subset's features, evaluate on val and test.

    Writes metrics.json and predictions.parquet with the keys and columns of a CNN run.
    """
    import sklearn

    from smalldl import radiomics

    task = config["tasks"][task_name]
    labels = list(task["labels"])
    split = pd.read_parquet(split_parquet)
    subset = pd.read_csv(subset_csv, dtype={"image_id": str, "patient_id": str})
    if len(subset) != n:
        raise InputError(f"training subset {subset_csv} has {len(subset)} rows, expected n={n}")
    val_table, test_table = _eval_part(split, "val"), _eval_part(split, "test")
    if len(val_table) == 0:
        raise InputError(f"split {split_parquet}: empty validation set (the best radiomics model is chosen on it)")
    features = pd.read_parquet(features_parquet)
    where = f"radiomics features {features_parquet}"
    parts = {"train": subset, "val": val_table, "test": test_table}
    x = {k: radiomics.feature_matrix(features, list(t["image_id"].astype(str)), where) for k, t in parts.items()}
    y = {k: t[labels].to_numpy(dtype=np.float64) for k, t in parts.items()}
    run_seed = derive_seed(config["seed"], "radiomics", task_name, featureset, model, n, seed)
    print(
        f"radiomics {task_name} {featureset} {model} n={n} seed={seed}: train {len(subset)}, val {len(val_table)}, "
        f"test {len(test_table)}, {x['train'].shape[1]} features",
        file=sys.stderr,
    )
    t0 = time.time()
    probs, infos = radiomics.fit_predict(
        x["train"], y["train"], {"val": x["val"], "test": x["test"]}, labels, model, settings, run_seed, threads
    )
    wall = time.time() - t0
    val, test = radiomics.scores(y["val"], probs["val"], labels), radiomics.scores(y["test"], probs["test"], labels)
    preds = pd.DataFrame({"image_id": list(test_table["image_id"].astype(str))})
    for j, label in enumerate(labels):
        preds[f"y_{label}"] = y["test"][:, j].astype(np.int64)
        preds[f"p_{label}"] = probs["test"][:, j]
    cv = {label: info["cv_auc"] for label, info in infos.items()}
    cv_defined = [v for v in cv.values() if v is not None]
    metrics = {
        "task": task_name,
        "arch": f"radiomics_{featureset}",
        "recipe": model,
        "family": "radiomics",
        "featureset": featureset,
        "model": model,
        "schedule": None,
        "transfer": None,
        "source": None,
        "init": None,
        "n": n,
        "seed": seed,
        "run_seed": run_seed,
        "task_type": task["type"],
        "labels": labels,
        "n_train": len(subset),
        "n_val": len(val_table),
        "n_test": len(test_table),
        "n_features": int(x["train"].shape[1]),
        "train_positives": splits_mod.positive_counts(subset, labels),
        "val_auc": val["auc"],
        "val_auc_tta": None,  # no test-time augmentation: aggregation falls back to the plain AUC
        "val_loss": val["loss"],
        "val_auc_per_label": val["per_label"],
        "test_auc": test["auc"],
        "test_auc_tta": None,
        "test_loss": test["loss"],
        "test_auc_per_label": test["per_label"],
        "test_auc_per_label_tta": None,
        "tta_views": 0,
        "cv_auc": float(np.mean(cv_defined)) if cv_defined else None,
        "cv_auc_per_label": cv,
        "cv_folds": int(settings["cv_folds"]),
        "n_iter": int(settings["n_iter"]),
        "best_params": {label: info["best_params"] for label, info in infos.items()},
        "fit_status": {label: info["status"] for label, info in infos.items()},
        "convergence_warnings": int(sum(info["convergence_warnings"] for info in infos.values())),
        "selected_epoch": None,
        "epochs": None,
        "max_lr": None,
        "steps": None,
        "wall_time_s": wall,
        "images_per_s": None,
        "source_checkpoint": None,
        "source_val_auc": None,
        "features": str(features_parquet),
        "device": "cpu",
        "torch": None,
        "sklearn": str(sklearn.__version__),
        "python": platform.python_version(),
        "threads": int(threads),
    }
    with atomic_path(out_predictions) as tmp:
        preds.to_parquet(tmp, index=False)
    write_json(out_metrics, metrics)
    print(f"test AUC {test['auc']:.4f} (val AUC {val['auc']:.4f}, cv AUC {metrics['cv_auc']})", file=sys.stderr)
    return metrics


def radiomics_best(
    model_metrics: Sequence[str | Path],
    model_predictions: Sequence[str | Path],
    out_metrics: str | Path,
    out_predictions: str | Path,
) -> dict[str, Any]:
    """Pick the radiomics model with the highest validation AUC; copy its predictions and metrics."""
    from smalldl import radiomics

    if len(model_metrics) != len(model_predictions):
        raise InputError("radiomics best: one predictions.parquet per metrics.json is needed")
    candidates: dict[str, dict[str, Any]] = {}
    pred_of: dict[str, Path] = {}
    for m_path, p_path in zip(model_metrics, model_predictions, strict=True):
        if Path(m_path).parent != Path(p_path).parent:
            raise InputError(f"radiomics best: {m_path} and {p_path} are not from the same run")
        try:
            m = json.loads(Path(m_path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"run metrics {m_path} cannot be read ({exc})") from None
        if m.get("family") != "radiomics" or "model" not in m:
            raise InputError(f"run metrics {m_path}: not a radiomics model run")
        candidates[m["model"]] = m
        pred_of[m["model"]] = Path(p_path)
    chosen = radiomics.select_best(candidates)
    metrics = dict(candidates[chosen])
    metrics.update(
        recipe="best",
        model="best",
        chosen_model=chosen,
        selected_on="val_auc",
        candidates_val_auc={name: m.get("val_auc") for name, m in candidates.items()},
        chosen_run=str(pred_of[chosen].parent),
    )
    with atomic_path(out_predictions) as tmp:
        shutil.copyfile(pred_of[chosen], tmp)
    write_json(out_metrics, metrics)
    print(
        "radiomics best: "
        + ", ".join(f"{name} val AUC {m.get('val_auc')}" for name, m in candidates.items())
        + f" -> {chosen}",
        file=sys.stderr,
    )
    return metrics
