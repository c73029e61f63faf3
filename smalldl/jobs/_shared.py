"""What the training jobs (pretrain, lr_find, finetune) share: the cached images of a split's rows, the
job's lock and torch's threads and device (a GPU slot held for the job), the model a recipe starts from,
the formats it trains in (smalldl.formats), the resumable fit, the history and environment records."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.config import NO_SOURCE, Recipe, result_settings
from smalldl.data import cache as cache_mod
from smalldl.errors import InputError
from smalldl.utils import atomic_path, derive_seed, one_writer, read_table

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


def selected_rows(split: pd.DataFrame, name: str) -> pd.DataFrame:
    """The selected rows of one part (train, val or test) of a split table."""
    return split[(split["split"] == name) & split["selected"]].reset_index(drop=True)


def cached_data(cache_arr: np.ndarray, info: Mapping[str, Any], table: pd.DataFrame, task: Mapping[str, Any]):
    """The cached images of ``table``'s rows with their targets, as a ``smalldl.data.arrays.Data``."""
    from smalldl.data.arrays import Data

    rows = cache_mod.rows_for(dict(info), list(table["image_id"]))
    labels = list(task["labels"])
    if task["type"] == "multiclass":
        targets = table[labels[0]].to_numpy(dtype=np.int64)
    else:
        targets = table[labels].to_numpy(dtype=np.float32)
    return Data(images=np.asarray(cache_arr[rows]), targets=targets, image_ids=list(table["image_id"]))


def num_outputs(task: Mapping[str, Any], split: pd.DataFrame) -> int:
    if task["type"] == "multiclass":
        return int(split[task["labels"][0]].max()) + 1
    return len(task["labels"])


@contextmanager
def training_torch(settings: Mapping[str, Any], threads: int, job: str = "") -> Iterator[tuple[Any, Any, Any]]:
    """(torch, device, GPU slot) of a training job for the ``with`` block: torch with ``threads`` threads
    and deterministic algorithms; the device of ``settings["device"]``: ``cuda:<i>`` of a GPU slot claimed
    for the block (``smalldl.devices``, at most ``settings["jobs_per_gpu"]`` jobs to a GPU, the current
    CUDA device), or the CPU with no slot."""
    import torch

    from smalldl.devices import job_device

    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    with job_device(settings["device"], settings.get("jobs_per_gpu", 1), job=job) as (name, slot):
        device = torch.device(name)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # what lands on "the" CUDA device lands on this one, not cuda:0
        yield torch, device, slot


@contextmanager
def training_job(
    lock: str | Path, job: str, settings: Mapping[str, Any], threads: int
) -> Iterator[tuple[Any, Any, Any]]:
    """The ``with`` block of a training job, (torch, device, GPU slot): first the one-writer lock of its run
    folder (``utils.one_writer``: held from before a resume checkpoint is read until the outputs are
    written; a rerun beside a running orphan stops before it claims a GPU), then ``training_torch``."""
    with one_writer(lock, job), training_torch(settings, threads, job=job) as env:
        yield env


@dataclass
class Fitted:
    """What ``resumable_fit`` gives: ``fit``'s result, the settings with the formats chosen for the device
    (what the job then evaluates and records with), the record of that choice, the resume checkpoint
    (None: ``checkpoint: false``), which the job removes once its outputs are written, and the time the
    fit began."""

    result: dict[str, Any]
    settings: dict[str, Any]
    formats: dict[str, Any]
    checkpoint: Path | None
    started: float


def resumable_fit(
    model: Any,
    train: Any,
    val: Any,
    settings: Mapping[str, Any],
    *,
    device: Any,
    task: Mapping[str, Any],
    recipe: Recipe,
    seed: int,
    checkpoint: str | Path,
    identity: Mapping[str, Any],
    max_lr: float | None = None,
) -> Fitted:
    """Fit ``model`` (``smalldl.train.fit``) with ``recipe``'s schedule and transfer method, in the formats
    chosen for ``device`` (``choose_formats``), checkpointed to ``checkpoint`` after every epoch unless
    ``settings["checkpoint"]`` is off. A checkpoint already there is resumed if it was written by the same
    run: its signature is ``identity`` (what the run's result depends on besides its settings: recipe, seed,
    data, start weights) with the result settings in the chosen formats (``result_settings``: a changed
    device or thread count still resumes, a changed format does not)."""
    from smalldl.train import Run, fit

    checkpoint = Path(checkpoint) if settings.get("checkpoint", True) else None
    settings, formats = choose_formats(settings, device)
    signature = json.dumps({**identity, "settings": result_settings(settings)}, sort_keys=True, default=str)
    started = time.time()
    run = Run(
        task_type=task["type"],
        labels=list(task["labels"]),
        seed=seed,
        schedule=recipe.schedule,
        transfer=recipe.transfer,
        max_lr=max_lr,
        checkpoint=checkpoint,
        signature=signature,
    )
    return Fitted(fit(model, train, val, settings, run), settings, formats, checkpoint, started)


def environment(device: Any, formats: Mapping[str, Any] | None = None, *, slot: Any = None) -> dict[str, Any]:
    """Where and how a training job ran: its device, the GPU (UUID) and slot it held (null on the CPU),
    torch, Python and threads; with ``formats`` (``smalldl.formats.resolve``'s record) the precision, memory
    format and CPU kernels it trained with (``formats``: amp, channels_last, cpu_kernels, chosen_by,
    machine)."""
    import torch

    env = {
        "device": str(device),
        "gpu": slot.gpu.key if slot is not None else None,
        "gpu_slot": slot.index if slot is not None else None,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    if formats is not None:
        env["formats"] = {k: formats[k] for k in ("amp", "channels_last", "cpu_kernels", "chosen_by", "machine")}
    return env


def choose_formats(settings: Mapping[str, Any], device: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``settings`` with ``amp`` and ``channels_last`` resolved by the device rule (``smalldl.formats``),
    and the record of the choice (with ``cpu_kernels``)."""
    from smalldl import formats

    return formats.resolve(settings, device)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_history(history: list[dict[str, Any]], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history).reindex(columns=HISTORY_COLUMNS).to_csv(tmp, index=False)


def build_recipe_model(
    *,
    task: Mapping[str, Any],
    arch: str,
    recipe: Recipe,
    source_ckpt: str | Path | None,
    seed: int,
    outputs: int | None = None,
):
    """A new model for one recipe: a new head (``outputs`` units, default one per label), the body
    initialised as the recipe says (from the source checkpoint unless the recipe has no source). Returns
    (model, source meta, init info)."""
    import torch

    from smalldl import models
    from smalldl.init import initialise

    torch.manual_seed(seed)
    model = models.build(arch, outputs or len(task["labels"]))
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


def target_data(
    *,
    task: Mapping[str, Any],
    split_parquet: str | Path,
    subset_csv: str | Path,
    cache_npy: str | Path,
    cache_meta: str | Path,
    n: int | None = None,
):
    """(subset table, train, val, test) of a target task: the training subset and the split's selected
    validation and test rows, as ``smalldl.data.arrays.Data`` from the cache."""
    arr, info = cache_mod.open_cache(cache_npy, cache_meta)
    split = read_table(split_parquet)
    subset = read_table(subset_csv, dtype={"image_id": str, "patient_id": str})
    if n is not None and len(subset) != n:
        raise InputError(f"training subset {subset_csv} has {len(subset)} rows, expected n={n}")
    train = cached_data(arr, info, subset, task)
    val = cached_data(arr, info, selected_rows(split, "val"), task)
    test = cached_data(arr, info, selected_rows(split, "test"), task)
    return subset, train, val, test
