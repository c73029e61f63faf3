"""The training loop: batches from the uint8 cache, augmentation, one-cycle, best-val selection.

Plain functions per phase (as torchvision's references/classification/train.py): ``make_batches``,
``augment``, ``train_one_epoch``, ``evaluate``, ``fit``, ``predict``.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smalldl.evaluate import auc_per_label, mean_auc, multiclass_scores


@dataclass
class Data:
    """Images (uint8, N x H x W) and targets: float N x L (binary/multilabel) or int N (multiclass)."""

    images: np.ndarray
    targets: np.ndarray
    image_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


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


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W) -> float (B, 1, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1).float().div_(255.0)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def augment(x: torch.Tensor, crop: int, flip: bool, rotate: float, gen: torch.Generator) -> torch.Tensor:
    """Random rotation (uniform +-rotate degrees), horizontal flip (p=0.5) and random crop, per image."""
    b = x.shape[0]
    if rotate > 0:
        angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(rotate)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if flip:
        mask = torch.rand(b, generator=gen) < 0.5
        x = torch.where(mask.to(x.device).view(b, 1, 1, 1), x.flip(-1), x)
    h, w = x.shape[-2:]
    tops = torch.randint(0, h - crop + 1, (b,), generator=gen)
    lefts = torch.randint(0, w - crop + 1, (b,), generator=gen)
    return torch.stack(
        [
            x[i, :, t : t + crop, l_ : l_ + crop]
            for i, (t, l_) in enumerate(zip(tops.tolist(), lefts.tolist(), strict=True))
        ]
    )


def loss_function(task_type: str) -> nn.Module:
    return nn.CrossEntropyLoss() if task_type == "multiclass" else nn.BCEWithLogitsLoss()


def _targets(y: np.ndarray, task_type: str, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(y)).to(device)
    return t.long() if task_type == "multiclass" else t.float()


def _probs(logits: torch.Tensor, task_type: str) -> torch.Tensor:
    return logits.softmax(1) if task_type == "multiclass" else logits.sigmoid()


def make_optimizer(model: nn.Module, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=settings["max_lr"], momentum=0.9, weight_decay=settings["weight_decay"])
    return torch.optim.AdamW(params, lr=settings["max_lr"], weight_decay=settings["weight_decay"])


def current_momentum(group: Mapping[str, Any]) -> float:
    return float(group["betas"][0]) if "betas" in group else float(group.get("momentum", math.nan))


@torch.no_grad()
def predict(
    model: nn.Module, data: Data, crop: int, device: torch.device, task_type: str, batch_size: int = 128
) -> np.ndarray:
    """Probabilities on centre-cropped images, in data order."""
    model.eval()
    out = []
    for i in range(0, len(data), batch_size):
        x = center_crop(to_tensor(data.images[i : i + batch_size], device), crop)
        out.append(_probs(model(x), task_type).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Data, crop: int, device: torch.device, task_type: str, labels: list[str]
) -> dict[str, Any]:
    """Loss and AUC (mean and per label) on ``data``."""
    prob = predict(model, data, crop, device, task_type)
    eps = 1e-7
    if task_type == "multiclass":
        y = data.targets.astype(int)
        loss = float(-np.log(np.clip(prob[np.arange(len(y)), y], eps, 1)).mean())
        scores = multiclass_scores(y, prob)
        return {"loss": loss, "auc": scores["auc"], "accuracy": scores["accuracy"], "per_label": {}, "prob": prob}
    y = data.targets.reshape(len(prob), -1)
    p = np.clip(prob, eps, 1 - eps)
    loss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    per = auc_per_label(y, prob, labels)
    return {"loss": loss, "auc": mean_auc(per), "per_label": per, "prob": prob}


def train_one_epoch(
    model: nn.Module,
    data: Data,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    criterion: nn.Module,
    settings: Mapping[str, Any],
    task_type: str,
    epoch: int,
    step0: int,
    rng: np.random.Generator,
    gen: torch.Generator,
    device: torch.device,
    log: TextIO | None = None,
    progress_every: float = 30.0,
) -> list[dict[str, Any]]:
    """One pass over ``data``; returns one history row per optimizer step.

    Every ``progress_every`` seconds a line ``epoch e: step k/K, loss x`` goes to ``log``, so that a
    long epoch shows where it is.
    """
    model.train()
    rows = []
    batches = make_batches(len(data), settings["batch_size"], rng)
    last = time.monotonic()
    for k, idx in enumerate(batches):
        x = augment(to_tensor(data.images[idx], device), settings["crop"], settings["flip"], settings["rotate"], gen)
        y = _targets(data.targets[idx], task_type, device)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        group = optimizer.param_groups[0]
        rows.append(
            {
                "kind": "step",
                "epoch": epoch,
                "step": step0 + k,
                "lr": float(group["lr"]),
                "momentum": current_momentum(group),
                "train_loss": float(loss.item()),
            }
        )
        optimizer.step()
        scheduler.step()
        if log is not None and time.monotonic() - last >= progress_every:
            last = time.monotonic()
            print(
                f"epoch {epoch}: step {k + 1}/{len(batches)}, loss {rows[-1]['train_loss']:.4f}", file=log, flush=True
            )
    return rows


def fit(
    model: nn.Module,
    train: Data,
    val: Data,
    settings: Mapping[str, Any],
    task_type: str,
    labels: list[str],
    seed: int,
    log: TextIO | None = None,
    progress_every: float = 30.0,
) -> dict[str, Any]:
    """Train with one-cycle for ``settings['epochs']`` epochs; keep the weights of the epoch with the
    lowest validation loss and load them into ``model`` before returning.

    Returns history rows, the selected epoch and its validation scores, and timing.
    """
    log = log if log is not None else sys.stderr
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    criterion = loss_function(task_type)
    optimizer = make_optimizer(model, settings)
    total = settings["epochs"] * steps_per_epoch(len(train), settings["batch_size"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings["max_lr"],
        total_steps=total,
        pct_start=0.3,
        anneal_strategy="cos",
        div_factor=25.0,
        final_div_factor=1000.0,
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"loss": math.inf}
    best_state: dict[str, torch.Tensor] | None = None
    start = time.time()
    step = 0
    for epoch in range(1, settings["epochs"] + 1):
        t0 = time.time()
        rows = train_one_epoch(
            model,
            train,
            optimizer,
            scheduler,
            criterion,
            settings,
            task_type,
            epoch,
            step,
            rng,
            gen,
            device,
            log=log,
            progress_every=progress_every,
        )
        step += len(rows)
        history.extend(rows)
        scores = evaluate(model, val, settings["crop"], device, task_type, labels)
        train_loss = float(np.mean([r["train_loss"] for r in rows]))
        history.append(
            {
                "kind": "epoch",
                "epoch": epoch,
                "step": step,
                "train_loss": train_loss,
                "val_loss": scores["loss"],
                "val_auc": scores["auc"],
            }
        )
        mark = ""
        if scores["loss"] < best["loss"]:
            best = {"loss": scores["loss"], "auc": scores["auc"], "per_label": scores["per_label"], "epoch": epoch}
            best_state = copy.deepcopy(model.state_dict())
            mark = " *"
        speed = len(train) / max(time.time() - t0, 1e-9)
        print(
            f"epoch {epoch}/{settings['epochs']}: train_loss {train_loss:.4f} val_loss {scores['loss']:.4f} "
            f"val_auc {scores['auc']:.4f} ({speed:.0f} img/s){mark}",
            file=log,
            flush=True,
        )
    assert best_state is not None
    model.load_state_dict(best_state)
    wall = time.time() - start
    return {
        "history": history,
        "best_epoch": best["epoch"],
        "val_loss": best["loss"],
        "val_auc": best["auc"],
        "val_per_label": best["per_label"],
        "wall_time_s": wall,
        "images_per_s": settings["epochs"] * len(train) / wall,
        "steps": step,
    }
