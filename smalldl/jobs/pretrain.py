"""rules/pretrain.smk: source models, one checkpoint per (source, arch) in one format
(results/models/source/{source}/{arch}.pt): pretrained on a source task, or published ImageNet weights."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from smalldl.config import UNVERIFIED
from smalldl.data import cache as cache_mod
from smalldl.errors import InputError
from smalldl.jobs._shared import (
    build_recipe_model,
    cached_data,
    environment,
    file_sha256,
    num_outputs,
    resumable_fit,
    selected_rows,
    training_job,
    write_history,
)
from smalldl.utils import LOCK_NAME, derive_seed, read_table, write_json

#: Bootstrap resamples of the validation images behind a source model's ``val_auc_se``.
VAL_AUC_BOOTSTRAP = 1000


def pretrain(
    *,
    source: str,
    arch: str,
    recipe_name: str,
    task_name: str,
    task: Mapping[str, Any],
    settings: Mapping[str, Any],
    global_seed: int,
    cache_npy: str | Path,
    cache_meta: str | Path,
    split_parquet: str | Path,
    start_ckpt: str | Path | None,
    out_ckpt: str | Path,
    out_metrics: str | Path,
    out_history: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """Pretrain ``arch`` on the source task's training split with the source's recipe
    (sources.<name>.recipe: schedule, transfer method, the source model it starts from ``start_ckpt``,
    init), select on validation loss, save the body. The metadata records the chain of sources and the
    SHA-256 of the weights it started from."""
    from smalldl import models, stats
    from smalldl.config import NO_SOURCE, Recipe
    from smalldl.evaluate import evaluate
    from smalldl.train import state_sha256

    recipe = Recipe.parse(recipe_name)
    if (recipe.source == NO_SOURCE) != (start_ckpt is None):
        raise ValueError(f"source {source}: recipe {recipe_name} and start checkpoint {start_ckpt} disagree")
    lock = Path(out_ckpt).with_name(f".{Path(out_ckpt).stem}{LOCK_NAME}")  # beside its resume checkpoint
    with training_job(lock, f"pretrain {source} {arch}", settings, threads) as (torch, device, slot):
        arr, info = cache_mod.open_cache(cache_npy, cache_meta)
        split = read_table(split_parquet)
        train_table = selected_rows(split, "train")
        if settings.get("max_images") and len(train_table) > settings["max_images"]:
            rng = np.random.default_rng(derive_seed(global_seed, "pretrain-cap", source))
            train_table = train_table.iloc[np.sort(rng.choice(len(train_table), settings["max_images"], replace=False))]
        train = cached_data(arr, info, train_table, task)
        val = cached_data(arr, info, selected_rows(split, "val"), task)
        if len(val) == 0:
            raise InputError(f"source {source}: task {task_name} has an empty validation split (val_fraction)")
        seed = derive_seed(global_seed, "pretrain", source, arch)
        model, start_meta, init_info = build_recipe_model(
            task=task, arch=arch, recipe=recipe, source_ckpt=start_ckpt, seed=seed, outputs=num_outputs(task, split)
        )
        start_state = state_sha256(model.body.state_dict())
        model = model.to(device)
        chain = [*start_meta.get("chain", [recipe.source] if recipe.source != NO_SOURCE else []), source]
        print(
            f"pretrain {source} ({task_name}, {task['type']}) on {len(train)} images, val {len(val)}, {arch}, "
            f"recipe {recipe_name} ({' -> '.join(chain)})",
            file=sys.stderr,
        )
        identity = {
            "recipe": recipe_name,
            "seed": seed,
            "n": len(train),
            "start": file_sha256(start_ckpt) if start_ckpt else None,
        }
        fitted = resumable_fit(
            model,
            train,
            val,
            settings,
            device=device,
            task=task,
            recipe=recipe,
            seed=seed,
            checkpoint=f"{out_ckpt}.resume",
            identity=identity,
        )
        result, settings, formats = fitted.result, fitted.settings, fitted.formats
        # the selected model's validation AUC with a bootstrap standard error over the validation images: the
        # results flag a source whose AUC is within its CI of 0.5 (smalldl.results.sources)
        val_scores = evaluate(model, val, settings, device=device, task_type=task["type"], labels=list(task["labels"]))
        se_rng = np.random.default_rng(derive_seed(global_seed, "pretrain-val-se", source, arch))
        val_auc_se = stats.auc_bootstrap_se(
            val.targets, val_scores["prob"], VAL_AUC_BOOTSTRAP, se_rng, multiclass=task["type"] == "multiclass"
        )
        meta = {
            "source": source,
            "task": task_name,
            "arch": arch,
            "recipe": recipe_name,
            "chain": chain,
            # weights trained here; from a start whose own provenance is unverified, unverified too
            "provenance": (
                f"trained here from {UNVERIFIED}"
                if str(start_meta.get("provenance", "")).endswith(UNVERIFIED)
                else "trained here"
            ),
            "start_checkpoint": str(start_ckpt) if start_ckpt else None,
            "start_sha256": file_sha256(start_ckpt) if start_ckpt else None,
            "start_state_sha256": start_state,
            "init": init_info,
            "seed": seed,
            "n_train": len(train),
            "n_val": len(val),
            "best_epoch": result["best_epoch"],
            "val_loss": result["val_loss"],
            "val_auc": result["val_auc"],
            "val_auc_se": val_auc_se,
            "val_auc_bootstrap": VAL_AUC_BOOTSTRAP,
            "selected_state_sha256": result["selected_state_sha256"],
            "wall_time_s": result["wall_time_s"],
            "images_per_s": result["images_per_s"],
            "settings": dict(settings),
            **environment(device, formats, slot=slot),
        }
        write_history(result["history"], out_history)
        models.save_source(out_ckpt, arch=arch, body=model.body.state_dict(), meta=meta)
        write_json(out_metrics, meta)
        if fitted.checkpoint is not None:
            fitted.checkpoint.unlink(missing_ok=True)
        return meta


def imagenet_weights(
    *,
    source: str,
    arch: str,
    files: Mapping[str, str],
    versions: Mapping[str, str] | None = None,
    out_ckpt: str | Path,
    out_metrics: str | Path,
) -> dict[str, Any]:
    """Write the ImageNet weights of ``arch`` as a source checkpoint (pretrain's format): ``files[arch]``
    (sources.<source>.files) if given, the packaged EfficientNet-Lite0 weights, or torchvision's
    (``versions[arch]``: sources.<source>.torchvision_weights, e.g. IMAGENET1K_V1; else DEFAULT)."""
    from smalldl import models

    version = (versions or {}).get(arch)
    local = (files or {}).get(arch)
    body, origin = models.imagenet_body_state(arch, local, source, version)
    meta = {
        "source": source,
        "weights": "imagenet",
        "chain": [source],
        "arch": arch,
        "origin": origin,
        "torchvision_weights": version or "DEFAULT",
        "tensors": len(body),
        "provenance": UNVERIFIED if local else "published",
    }
    if Path(origin).is_file():
        meta["origin_sha256"] = file_sha256(origin)
    models.save_source(out_ckpt, arch=arch, body=body, meta=meta)
    write_json(out_metrics, meta)
    print(f"ImageNet weights of {arch} from {origin}: {len(body)} tensors", file=sys.stderr)
    if local:
        print(
            f"WARNING: sources.{source}.files.{arch}: the weights in {origin} (SHA-256 {meta.get('origin_sha256')}) "
            "are taken as ImageNet weights unverified: nothing here checks what they were trained on (weights "
            "trained on this study's validation or test patients would leak them); check their origin",
            file=sys.stderr,
        )
    return meta
