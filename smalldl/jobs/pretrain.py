"""rules/pretrain.smk: source models, one checkpoint per (source, arch) in one format
(models/source/{source}/{arch}.pt): pretrained on a source task, or published ImageNet weights."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.data import cache as cache_mod
from smalldl.errors import InputError
from smalldl.jobs._shared import (
    cached_data,
    environment,
    file_sha256,
    num_outputs,
    selected_rows,
    setup_torch,
    write_history,
)
from smalldl.utils import derive_seed, write_json


def pretrain(
    *,
    source: str,
    arch: str,
    task_name: str,
    task: Mapping[str, Any],
    settings: Mapping[str, Any],
    global_seed: int,
    cache_npy: str | Path,
    cache_meta: str | Path,
    split_parquet: str | Path,
    out_ckpt: str | Path,
    out_metrics: str | Path,
    out_history: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """Pretrain ``arch`` on the source task's training split (one-cycle, all layers); save the body."""
    from smalldl import models
    from smalldl.train import Run, fit

    torch, device = setup_torch(settings, threads)
    arr, info = cache_mod.open_cache(cache_npy, cache_meta)
    split = pd.read_parquet(split_parquet)
    train_table = selected_rows(split, "train")
    if settings.get("max_images") and len(train_table) > settings["max_images"]:
        rng = np.random.default_rng(derive_seed(global_seed, "pretrain-cap", source))
        train_table = train_table.iloc[np.sort(rng.choice(len(train_table), settings["max_images"], replace=False))]
    train = cached_data(arr, info, train_table, task)
    val = cached_data(arr, info, selected_rows(split, "val"), task)
    if len(val) == 0:
        raise InputError(f"source {source}: task {task_name} has an empty validation split (val_fraction)")
    seed = derive_seed(global_seed, "pretrain", source, arch)
    torch.manual_seed(seed)
    model = models.build(arch, num_outputs(task, split)).to(device)
    print(
        f"pretrain {source} ({task_name}, {task['type']}) on {len(train)} images, val {len(val)}, {arch}",
        file=sys.stderr,
    )
    checkpoint = f"{out_ckpt}.resume" if settings.get("checkpoint", True) else None
    signature = json.dumps({"settings": dict(settings), "seed": seed, "n": len(train)}, sort_keys=True, default=str)
    result = fit(
        model,
        train,
        val,
        settings,
        Run(task_type=task["type"], labels=list(task["labels"]), seed=seed, checkpoint=checkpoint, signature=signature),
    )
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
        **environment(device),
    }
    write_history(result["history"], out_history)
    models.save_source(out_ckpt, arch=arch, body=model.body.state_dict(), meta=meta)
    write_json(out_metrics, meta)
    if checkpoint:
        Path(checkpoint).unlink(missing_ok=True)
    return meta


def imagenet_weights(
    *, source: str, arch: str, files: Mapping[str, str], out_ckpt: str | Path, out_metrics: str | Path
) -> dict[str, Any]:
    """Write the ImageNet weights of ``arch`` as a source checkpoint (pretrain's format): ``files[arch]``
    (sources.<source>.files) if given, the packaged EfficientNet-Lite0 weights, or torchvision's."""
    from smalldl import models

    body, origin = models.imagenet_body_state(arch, (files or {}).get(arch), source)
    meta = {"source": source, "weights": "imagenet", "arch": arch, "origin": origin, "tensors": len(body)}
    if Path(origin).is_file():
        meta["origin_sha256"] = file_sha256(origin)
    models.save_source(out_ckpt, arch=arch, body=body, meta=meta)
    write_json(out_metrics, meta)
    print(f"ImageNet weights of {arch} from {origin}: {len(body)} tensors", file=sys.stderr)
    return meta
