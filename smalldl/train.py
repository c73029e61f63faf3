"""The training loop: batches from the uint8 cache, the transfer methods (feature extractor, fine-tune
all, discriminative lrs with gradual unfreezing), best-validation-loss model selection, resumable
per-epoch checkpoints, and the lr finder.

Plain functions per phase (as torchvision's references/classification/train.py): ``make_batches``,
``train_one_epoch``, ``fit``, ``lr_sweep``; what every step of a run uses (model, optimizer, schedule,
transfer plan, layer groups, loss, device, settings, task type) travels in one ``Loop``; what a run is
(task, seed, schedule, transfer method, max_lr, checkpoint) in one ``Run``, and its log and observers in
``Hooks``, so that ``fit(model, train, val, settings, run, hooks)`` takes a handful. What training
shares with evaluation lives elsewhere: the images and targets (``Data``) in ``smalldl.data.arrays``; the
transforms (``to_tensor``, ``augment``, ``tta_views``) in ``smalldl.data.transforms``; ``predict``,
``evaluate`` and ``scores`` in ``smalldl.evaluate``; the precision settings (bf16 autocast, channels_last) in
``smalldl.precision``; the ``torch.compile`` wrapper in ``smalldl.compilation``; the schedules and
``make_schedule`` in ``smalldl.schedules``.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smalldl import kernels, models, schedules
from smalldl.compilation import compile_errors, compiled
from smalldl.data.arrays import Data
from smalldl.data.transforms import augment, to_tensor
from smalldl.evaluate import evaluate
from smalldl.precision import autocast, use_channels_last
from smalldl.utils import derive_seed, save_torch


def make_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled partition of range(n) into batches; a last batch of one joins the previous one
    (BatchNorm cannot train on a single image)."""
    order = rng.permutation(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = np.concatenate([batches[-1], last])
    return batches


def steps_per_epoch(n: int, batch_size: int) -> int:
    steps = math.ceil(n / batch_size)
    return steps - 1 if steps > 1 and n % batch_size == 1 else steps


class MaskedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy averaged over the known labels: a negative target (-1, uncertain) adds
    nothing to the loss or the gradient. Equals ``BCEWithLogitsLoss`` when every label is known."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        known = (target >= 0).to(logits.dtype)
        terms = F.binary_cross_entropy_with_logits(logits, target.clamp(min=0), reduction="none")
        return (terms * known).sum() / known.sum().clamp(min=1)


def loss_function(task_type: str, masked: bool = False) -> nn.Module:
    """Cross-entropy for multiclass, BCE with logits otherwise; ``masked`` (targets hold -1 for
    uncertain labels) leaves those labels out. Unmasked data keeps torch's plain BCE, bit for bit."""
    if task_type == "multiclass":
        return nn.CrossEntropyLoss()
    return MaskedBCEWithLogitsLoss() if masked else nn.BCEWithLogitsLoss()


def has_masked_labels(data: Data, task_type: str) -> bool:
    """Targets hold uncertain (-1) labels: a check on the host, once per job, not a device sync."""
    return task_type != "multiclass" and bool((np.asarray(data.targets) < 0).any())


def _targets(y: np.ndarray, task_type: str, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(y)).to(device)
    return t.long() if task_type == "multiclass" else t.float()


def current_momentum(group: Mapping[str, Any]) -> float:
    return schedules.get_momentum(dict(group))


#: devices with fused AdamW / SGD kernels in torch (2.4 and later for the CPU)
FUSED_DEVICES = ("cuda", "cpu")


def use_fused(settings: Mapping[str, Any], device: torch.device | None) -> bool:
    """Fused optimizer kernels (one kernel per step for all parameters, instead of a few per layer group
    and tensor): ``fused: auto`` turns them on where torch has them (CUDA, and the CPU, where AdamW's step on
    EfficientNet-Lite0 takes 10 ms instead of 27-33: ``benchmarks/peer_fastai.py``); ``on`` / ``off``
    force it."""
    mode = settings.get("fused", "auto")
    return mode == "on" or (mode == "auto" and device is not None and device.type in FUSED_DEVICES)


def make_optimizer(
    param_groups: list[list[nn.Parameter]], settings: Mapping[str, Any], device: torch.device | None = None
) -> torch.optim.Optimizer:
    """One optimizer param group per layer group (lr and momentum are written by the schedule)."""
    groups = [{"params": ps} for ps in param_groups]
    fused = {"fused": True} if use_fused(settings, device) else {}
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(
            groups, lr=settings["max_lr"], momentum=0.9, weight_decay=settings["weight_decay"], **fused
        )
    return torch.optim.AdamW(groups, lr=settings["max_lr"], weight_decay=settings["weight_decay"], **fused)


# ----------------------------------------------------------------------------------- transfer methods


@dataclass
class Plan:
    """How the layer groups train: lr divisors and the iteration at which each group is unfrozen."""

    divisors: tuple[float, float, float]
    unfreeze_step: tuple[float, float, float]

    def trainable(self, i: int) -> tuple[int, ...]:
        """Groups (1-based, as in the paper) trainable at iteration ``i``."""
        return tuple(g + 1 for g in range(3) if i >= self.unfreeze_step[g])


def make_plan(transfer: str, total: int, settings: Mapping[str, Any]) -> Plan:
    """extractor: only group 3 (the new head) ever trains; finetune: everything from the start, one lr;
    gradual: lrs schedule/9, /3, /1, group 2 unfrozen after 10% and group 1 after 20% of the iterations."""
    if transfer == "finetune":
        return Plan((1.0, 1.0, 1.0), (0, 0, 0))
    if transfer == "extractor":
        return Plan((1.0, 1.0, 1.0), (math.inf, math.inf, 0))
    if transfer == "gradual":
        d1, d2, d3 = (float(v) for v in settings["group_lr_divs"])
        u1, u2 = settings["unfreeze_at"]
        return Plan((d1, d2, d3), (math.ceil(u1 * total), math.ceil(u2 * total), 0))
    raise ValueError(f"unknown transfer method {transfer!r}")


def set_trainable(
    model: nn.Module, groups: list[list[nn.Module]], trainable: tuple[int, ...], *, frozen_bn: str
) -> None:
    """Put ``model`` in train mode for a training step; the parameters of frozen groups get no gradient.
    ``frozen_bn`` (the ``frozen_bn`` training setting) says what else a frozen group does: "adapt" (the
    paper's authors' ``model.train()`` on the whole model, fastai's ``train_bn``): it stays in train mode,
    so its BatchNorm layers normalise with batch statistics and their running statistics keep updating;
    "fixed": it is put in eval mode, so its BatchNorm running statistics stay as they are (the source's).
    Called at the start of every epoch (after the previous epoch's evaluation left the model in eval mode)
    and whenever the trainable groups change."""
    if frozen_bn not in ("adapt", "fixed"):
        raise ValueError(f"unknown frozen_bn {frozen_bn!r}; expected adapt or fixed")
    model.train()
    for g, modules in enumerate(groups, start=1):
        on = g in trainable
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(on)
            if not on and frozen_bn == "fixed":
                m.eval()


# --------------------------------------------------------------------------------------------- loop


@dataclass
class Run:
    """One training run: the task (its type and label names), the seed every draw derives from, the
    recipe's schedule ("onecycle": fixed epochs; "regular": lr / 10 after an epoch without improvement,
    stop below the lr floor or at ``epochs``) and transfer method ("finetune", "extractor", "gradual"),
    max_lr (None: ``settings["max_lr"]``), and the checkpoint file written after every epoch (resumed only
    if it holds the same ``signature``)."""

    task_type: str
    labels: list[str]
    seed: int
    schedule: str = "onecycle"
    transfer: str = "finetune"
    max_lr: float | None = None
    checkpoint: str | os.PathLike | None = None
    signature: str = ""


@dataclass
class Hooks:
    """Where a run reports and what tests observe: the log (default stderr), a progress line every
    ``progress_every`` seconds within long epochs, ``on_epoch(epoch, model)`` after each epoch and
    ``on_step(i, model, optimizer)`` after each optimizer step."""

    log: TextIO | None = None
    progress_every: float = 30.0
    on_epoch: Callable[..., Any] | None = None
    on_step: Callable[..., Any] | None = None


@dataclass
class Loop:
    """What every training step uses: the model and its layer groups, the optimizer and the schedule
    that writes its lrs, the transfer plan (lr divisors, unfreezing), the loss, the device, the
    settings (batch size, augmentation, precision) and the task type."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: schedules.OneCycle | schedules.Plateau
    plan: Plan
    groups: list[list[nn.Module]]
    criterion: nn.Module
    device: torch.device
    settings: Mapping[str, Any]
    task_type: str


def train_one_epoch(
    loop: Loop,
    data: Data,
    *,
    epoch: int,
    step0: int,
    rng: np.random.Generator,
    gen: torch.Generator,
    hooks: Hooks | None = None,
) -> list[dict[str, Any]]:
    """One pass over ``data``; returns one history row per optimizer step (the lr of every layer group
    and the momentum as the optimizer holds them for that step, the unfrozen groups, the loss). Progress
    lines go to ``hooks.log`` (none without a log)."""
    hooks = hooks if hooks is not None else Hooks()
    log, progress_every, on_step = hooks.log, hooks.progress_every, hooks.on_step
    model, optimizer, plan, groups = loop.model, loop.optimizer, loop.plan, loop.groups
    settings, device = loop.settings, loop.device
    net = compiled(model, settings)  # the model itself unless compile: on (one wrapper per model)
    rows = []
    fmt = torch.channels_last if use_channels_last(settings, device) else torch.contiguous_format
    batches = make_batches(len(data), settings["batch_size"], rng)
    last = time.monotonic()
    trainable = plan.trainable(step0)
    set_trainable(model, groups, trainable, frozen_bn=settings["frozen_bn"])  # also undoes evaluate's eval()
    for k, idx in enumerate(batches):
        i = step0 + k
        if plan.trainable(i) != trainable:
            trainable = plan.trainable(i)
            set_trainable(model, groups, trainable, frozen_bn=settings["frozen_bn"])
            if log is not None:
                print(f"step {i}: layer groups {','.join(map(str, trainable))} trainable", file=log, flush=True)
        schedules.apply(loop.schedule, optimizer, i, plan.divisors)
        x = augment(to_tensor(data.images[idx], device), settings["crop"], settings["flip"], settings["rotate"], gen)
        y = _targets(data.targets[idx], loop.task_type, device)
        optimizer.zero_grad(set_to_none=True)
        with compile_errors(settings):  # compiling happens at the first forward and backward
            with autocast(settings, device):
                logits = net(x.contiguous(memory_format=fmt))
            loss = loop.criterion(logits.float(), y)
            loss.backward()
        pg = optimizer.param_groups
        rows.append(
            {
                "kind": "step",
                "epoch": epoch,
                "step": i,
                "lr": float(pg[-1]["lr"]),
                "lr_group1": float(pg[0]["lr"]),
                "lr_group2": float(pg[1]["lr"]),
                "lr_group3": float(pg[2]["lr"]),
                "momentum": current_momentum(pg[-1]),
                "trainable": ",".join(map(str, trainable)),
                "train_loss": loss.detach(),  # a tensor until the epoch ends: no GPU sync per step
            }
        )
        optimizer.step()
        if on_step is not None:
            on_step(i, model, optimizer)
        if log is not None and time.monotonic() - last >= progress_every:
            last = time.monotonic()
            print(f"epoch {epoch}: step {k + 1}/{len(batches)}, loss {float(loss.detach()):.4f}", file=log, flush=True)
    if rows:
        for row, value in zip(rows, torch.stack([r["train_loss"] for r in rows]).float().cpu().tolist(), strict=True):
            row["train_loss"] = value
    return rows


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A digest of a state_dict's tensors (names, dtypes, shapes, bytes) that identifies a model."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _cpu_copy(obj: Any) -> Any:
    """A CPU copy of tensors nested in dicts/lists/tuples (training goes on changing the originals)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    save_torch(state, path)


class _CheckpointWriter:
    """Writes checkpoints in a background thread, one at a time: the epoch's state is copied to the
    CPU at once and training goes on while it is written (atomically, temp file + rename). With
    ``background=False`` (a CPU model) it writes the live state at once instead: there the copy is the
    same work again (0.06 s an epoch for EfficientNet-Lite0 and its AdamW state) and the thread shares the
    training's cores: 0.45 s of CPU per demo fine-tuning job in all against 0.27 s written in place."""

    def __init__(self, background: bool = True) -> None:
        self._background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _run(self, path: str | os.PathLike, state: dict[str, Any]) -> None:
        try:
            _save_checkpoint(path, state)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the training thread by wait()
            self._error = exc

    def save(self, path: str | os.PathLike, state: dict[str, Any]) -> None:
        self.wait()
        if not self._background:
            _save_checkpoint(path, state)
            return
        self._thread = threading.Thread(target=self._run, args=(path, _cpu_copy(state)), daemon=False)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _load_checkpoint(path: str | os.PathLike, signature: str, log: TextIO) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a checkpoint cut short by a kill
        print(f"resume checkpoint {path} unreadable ({exc}); starting over", file=log, flush=True)
        return None
    if ckpt.get("signature") != signature:
        print(f"resume checkpoint {path} belongs to other settings; starting over", file=log, flush=True)
        return None
    return ckpt


def fit(
    model: nn.Module, train: Data, val: Data, settings: Mapping[str, Any], run: Run, hooks: Hooks | None = None
) -> dict[str, Any]:
    """Train ``model`` (a models.Classifier) as ``run`` says and load into it the weights of the epoch with
    the lowest validation loss. A run whose checkpoint exists with the same signature resumes after its
    last epoch and ends exactly as an uninterrupted run. Returns history rows, the selected epoch, its
    validation scores, the digest of the selected weights and timing (``wall_time_s``; ``validate_s`` of it in
    the per-epoch validation of this attempt)."""
    hooks = hooks if hooks is not None else Hooks()
    if hooks.log is None:
        hooks = replace(hooks, log=sys.stderr)
    task_type, labels, seed, schedule, transfer = run.task_type, run.labels, run.seed, run.schedule, run.transfer
    max_lr, checkpoint, signature = run.max_lr, run.checkpoint, run.signature
    log, on_epoch = hooks.log, hooks.on_epoch
    device = next(model.parameters()).device
    max_lr = float(max_lr if max_lr is not None else settings["max_lr"])
    spe = steps_per_epoch(len(train), settings["batch_size"])
    total = settings["epochs"] * spe
    if use_channels_last(settings, device):
        model.to(memory_format=torch.channels_last)
    kernels.apply(model, settings, device)  # train.cpu_kernels: on (a CPU) or nothing
    groups = models.layer_groups(model)
    plan = make_plan(transfer, total, settings)
    criterion = loss_function(task_type, has_masked_labels(train, task_type))
    optimizer = make_optimizer([[p for m in g for p in m.parameters()] for g in groups], settings, device=device)
    sched = schedules.make_schedule(schedule, settings, max_lr=max_lr, total=total)
    loop = Loop(
        model=model, optimizer=optimizer, schedule=sched, plan=plan, groups=groups, criterion=criterion,
        device=device, settings=settings, task_type=task_type,
    )  # fmt: skip
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"loss": math.inf}
    best_state: dict[str, torch.Tensor] | None = None
    step, first_epoch, elapsed, stopped = 0, 1, 0.0, False
    validate_s = 0.0  # seconds in the per-epoch validation (of this attempt)
    resumed = _load_checkpoint(checkpoint, signature, log) if checkpoint else None
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        sched.load_state_dict(resumed["schedule"])
        history, best = list(resumed["history"]), dict(resumed["best"])
        best_state = resumed["best_state"] if resumed["best_state"] is not None else resumed["model"]
        step, first_epoch, elapsed = int(resumed["step"]), int(resumed["epoch"]) + 1, float(resumed["elapsed"])
        stopped = bool(resumed["stopped"])
        print(f"resumed from {checkpoint} after epoch {first_epoch - 1}", file=log, flush=True)
    start = time.time() - elapsed
    writer = _CheckpointWriter(background=device.type != "cpu")
    epoch = first_epoch - 1
    for epoch in range(first_epoch, settings["epochs"] + 1):
        if stopped:
            break
        t0 = time.time()
        torch.manual_seed(derive_seed(seed, "epoch", epoch))
        rng = np.random.default_rng(derive_seed(seed, "batches", epoch))
        gen = torch.Generator().manual_seed(derive_seed(seed, "augment", epoch))
        rows = train_one_epoch(loop, train, epoch=epoch, step0=step, rng=rng, gen=gen, hooks=hooks)
        step += len(rows)
        history.extend(rows)
        t_val = time.time()
        sc = evaluate(model, val, settings, device=device, task_type=task_type, labels=labels)
        validate_s += time.time() - t_val
        train_loss = float(np.mean([r["train_loss"] for r in rows]))
        history.append(
            {
                "kind": "epoch",
                "epoch": epoch,
                "step": step,
                "lr": rows[-1]["lr"],
                "train_loss": train_loss,
                "val_loss": sc["loss"],
                "val_auc": sc["auc"],
            }
        )
        mark = ""
        if sc["loss"] < best["loss"]:
            # prob: the selected epoch's validation predictions, which the job's validation TTA pass reuses
            prob = torch.from_numpy(np.array(sc["prob"]))
            best = {"loss": sc["loss"], "auc": sc["auc"], "per_label": sc["per_label"], "epoch": epoch, "prob": prob}
            best_state = _clone_state(model)
            mark = " *"
        stopped = bool(sched.epoch_end(sc["loss"]))
        speed = len(train) / max(time.time() - t0, 1e-9)
        print(
            f"epoch {epoch}/{settings['epochs']}: train_loss {train_loss:.4f} val_loss {sc['loss']:.4f} "
            f"val_auc {sc['auc']:.4f} lr {rows[-1]['lr']:.2e} ({speed:.0f} img/s){mark}"
            + (" - lr below the floor, stopping" if stopped else ""),
            file=log,
            flush=True,
        )
        if on_epoch is not None:
            on_epoch(epoch, model)
        # no checkpoint after the last epoch: the job removes it once its outputs are written, and a job
        # killed before that trains its last epoch again from the previous one's, to the same numbers
        if checkpoint and epoch < settings["epochs"] and not stopped:
            current = best_state if mark else model.state_dict()  # copied by a background writer
            writer.save(
                checkpoint,
                {
                    "signature": signature,
                    "epoch": epoch,
                    "step": step,
                    "elapsed": time.time() - start,
                    "stopped": stopped,
                    "model": current,
                    "optimizer": optimizer.state_dict(),
                    "schedule": sched.state_dict(),
                    "history": history,
                    "best": best,
                    "best_state": None if mark else best_state,  # None: the best is this epoch's model
                },
            )
    writer.wait()
    assert best_state is not None
    model.load_state_dict(best_state)
    wall = time.time() - start
    epochs_run = max(r["epoch"] for r in history if r["kind"] == "epoch")
    return {
        "history": history,
        "best_epoch": best["epoch"],
        "val_loss": best["loss"],
        "val_auc": best["auc"],
        "val_per_label": best["per_label"],
        # the selected epoch's centre-crop validation probabilities (None: resumed from an older checkpoint)
        "val_prob": best["prob"].numpy() if "prob" in best else None,
        "selected_state_sha256": state_sha256(best_state),
        "wall_time_s": wall,
        "validate_s": validate_s,
        "images_per_s": epochs_run * len(train) / max(wall, 1e-9),
        "steps": step,
        "epochs_run": epochs_run,
        "max_lr": max_lr,
    }


# ------------------------------------------------------------------------------------------ lr finder


def lr_sweep(
    model: nn.Module,
    train: Data,
    settings: Mapping[str, Any],
    *,
    task_type: str,
    seed: int,
    transfer: str = "finetune",
    log: TextIO | None = None,
) -> dict[str, Any]:
    """The lr finder: train with an lr growing exponentially from start_lr to end_lr over ``steps``
    iterations (cycling over the data), recording the loss; stop early once the smoothed loss exceeds
    ``diverge`` times its minimum. Layer groups and divisors as the transfer method trains them at the
    end (extractor: head only). Returns the sweep and the lr chosen by ``rule``."""
    log = log if log is not None else sys.stderr
    cfg = settings["lr_finder"]
    device = next(model.parameters()).device
    kernels.apply(model, settings, device)  # train.cpu_kernels: on (a CPU) or nothing
    groups = models.layer_groups(model)
    plan = make_plan(transfer, 1, settings)
    trainable = plan.trainable(10**9)
    set_trainable(model, groups, trainable, frozen_bn=settings["frozen_bn"])
    optimizer = make_optimizer([[p for m in g for p in m.parameters()] for g in groups], settings, device=device)
    criterion = loss_function(task_type, has_masked_labels(train, task_type))
    torch.manual_seed(derive_seed(seed, "lr_finder"))
    rng = np.random.default_rng(derive_seed(seed, "lr_finder", "batches"))
    gen = torch.Generator().manual_seed(derive_seed(seed, "lr_finder", "augment"))
    lrs = schedules.finder_lrs(cfg["start_lr"], cfg["end_lr"], cfg["steps"])
    batches: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    best = math.inf
    for k, lr in enumerate(lrs):
        if not batches:
            batches = make_batches(len(train), settings["batch_size"], rng)
        idx = batches.pop(0)
        for group, div in zip(optimizer.param_groups, plan.divisors, strict=True):
            group["lr"] = float(lr) / div
            schedules.set_momentum(group, settings["moms"][0])
        x = augment(to_tensor(train.images[idx], device), settings["crop"], settings["flip"], settings["rotate"], gen)
        y = _targets(train.targets[idx], task_type, device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(settings, device):
            logits = model(x)
        loss = criterion(logits.float(), y)
        loss.backward()
        optimizer.step()
        value = float(loss.item())
        smoothed = float(schedules.smooth_losses([r["loss"] for r in rows] + [value], cfg["smooth"])[-1])
        rows.append({"step": k, "lr": float(lr), "loss": value, "smoothed_loss": smoothed})
        if not math.isfinite(value) or (k > 0 and smoothed > cfg["diverge"] * best):
            print(f"lr finder: loss diverged at lr {lr:.2e} (step {k})", file=log, flush=True)
            break
        best = min(best, smoothed)
        if k % 20 == 0:
            print(f"lr finder: step {k}/{len(lrs)} lr {lr:.2e} loss {value:.4f}", file=log, flush=True)
    kept = [r for r in rows if math.isfinite(r["smoothed_loss"])]
    if len(kept) < 2:
        raise ValueError("lr finder: the loss diverged at once; lower lr_finder.start_lr")
    lrs_kept, raw = [r["lr"] for r in kept], [r["loss"] for r in kept]
    chosen = schedules.suggest(lrs_kept, [r["smoothed_loss"] for r in kept], cfg["rule"], raw=raw)
    # for the record (lr_find.json): the lr of the lowest raw loss and of the lowest smoothed loss, which
    # the chosen lr can be checked against
    raw_min = lrs_kept[int(np.nanargmin(raw))]
    smoothed_min = lrs_kept[int(np.argmin([r["smoothed_loss"] for r in kept]))]
    return {"rows": rows, "lr": chosen, "rule": cfg["rule"], "raw_min_lr": raw_min, "smoothed_min_lr": smoothed_min}
