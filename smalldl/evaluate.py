"""Evaluation: predictions of a model on cached images (centre crop or test-time augmentation) and their
loss and ROC AUC per label and the mean (``smalldl.metrics``), for binary, multilabel and multiclass.

``predict`` and ``evaluate`` take the crop, flip, rotation, amp, channels_last and batch size
(``eval_batch_size``) of evaluation from the ``settings`` mapping (the ``train_settings`` schema) and
nothing else, so every caller evaluates as the model was trained: the precision (``smalldl.precision``) and
``torch.compile`` wrapper (``smalldl.compilation``) are those of training. ``predict_views`` and
``evaluate_views`` give the centre-crop and the TTA result of one pass (the centre crop is the TTA's
first view).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from smalldl.compilation import compile_errors, compiled
from smalldl.data.arrays import Data
from smalldl.data.transforms import apply_augment, center_crop, to_tensor, tta_draws
from smalldl.metrics import auc_per_label, masked_bce, mean_auc, multiclass_scores
from smalldl.precision import autocast, use_channels_last


def _probs(logits: torch.Tensor, task_type: str) -> torch.Tensor:
    return logits.softmax(1) if task_type == "multiclass" else logits.sigmoid()


def eval_batch_size(settings: Mapping[str, Any], device: torch.device) -> int:
    """Images per forward pass of evaluation: ``settings["eval_batch_size"]``, or (null: auto) 4 x the
    training batch on a CPU and 16 x on CUDA, at most 512 and never below the training batch. Evaluation
    keeps no activations for a backward pass, so a batch several times the training batch fits wherever
    training fits; on a CPU larger batches gain little and cost memory."""
    size = settings.get("eval_batch_size")
    if size:
        return int(size)
    train_batch = int(settings.get("batch_size", 32))
    return max(train_batch, min((16 if device.type == "cuda" else 4) * train_batch, 512))


def predict_views(
    model: nn.Module,
    data: Data,
    settings: Mapping[str, Any],
    *,
    device: torch.device,
    task_type: str,
    tta: int = 0,
    seed: int = 0,
    batch_size: int | None = None,
    plain: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over ``data`` (in data order): the probabilities on the centre crop (``settings["crop"]``)
    and their mean with ``tta`` views augmented by ``settings["flip"]`` and ``settings["rotate"]`` (the
    same array when tta = 0). The centre crop is the TTA's first view, so the plain prediction costs no
    pass of its own. The views are drawn from a generator seeded with ``seed``, block by block of
    ``TTA_DRAW_BLOCK`` images whatever ``batch_size`` (default ``eval_batch_size``); bf16 autocast and
    channels_last as ``settings`` says; compiled once per model with ``compile: on`` (``compiled``).
    ``plain``: the centre-crop probabilities, known already (``fit``'s of the selected epoch: the same
    weights, settings and batches give the same floats); the pass then skips that view."""
    crop, flip, rotate = settings["crop"], settings["flip"], settings["rotate"]
    if plain is not None and tta == 0:
        return plain, plain
    batch_size = batch_size or eval_batch_size(settings, device)
    h, w = data.images.shape[1:3]
    draws = tta_draws(len(data), h, w, crop, flip, rotate, tta, torch.Generator().manual_seed(int(seed)))
    net = compiled(model, settings)
    with torch.no_grad(), compile_errors(settings):
        model.eval()
        fmt = torch.channels_last if use_channels_last(settings, device) else torch.contiguous_format
        plains, mean = [], []
        for i in range(0, len(data), batch_size):
            x = to_tensor(data.images[i : i + batch_size], device)
            views = [] if plain is not None else [center_crop(x, crop)]
            views.extend(apply_augment(x, tuple(d[i : i + batch_size] for d in v), crop, flip, rotate) for v in draws)
            with autocast(settings, device):
                probs = [_probs(net(v.contiguous(memory_format=fmt)).float(), task_type) for v in views]
            if plain is not None:
                probs.insert(0, torch.from_numpy(plain[i : i + batch_size]).to(device))
            prob = torch.stack(probs)
            plains.append(prob[0].cpu())
            mean.append(prob.mean(0).cpu())
        return torch.cat(plains).numpy(), torch.cat(mean).numpy()


def predict(
    model: nn.Module,
    data: Data,
    settings: Mapping[str, Any],
    *,
    device: torch.device,
    task_type: str,
    tta: int = 0,
    seed: int = 0,
    batch_size: int | None = None,
) -> np.ndarray:
    """Probabilities in data order: on the centre crop (tta = 0), or averaged over the original plus ``tta``
    augmented views (``predict_views``' second array)."""
    plain, mean = predict_views(
        model, data, settings, device=device, task_type=task_type, tta=tta, seed=seed, batch_size=batch_size
    )
    return mean if tta > 0 else plain


def scores(prob: np.ndarray, data: Data, *, task_type: str, labels: list[str]) -> dict[str, Any]:
    """Loss (from probabilities) and AUC, mean and per label."""
    eps = 1e-7
    if task_type == "multiclass":
        y = data.targets.astype(int)
        loss = float(-np.log(np.clip(prob[np.arange(len(y)), y], eps, 1)).mean())
        sc = multiclass_scores(y, prob)
        return {"loss": loss, "auc": sc["auc"], "accuracy": sc["accuracy"], "per_label": {}, "prob": prob}
    y = data.targets.reshape(len(prob), -1)
    loss = masked_bce(y, prob, eps)  # uncertain (-1) labels are left out, as in the training loss
    per = auc_per_label(y, prob, labels)
    return {"loss": loss, "auc": mean_auc(per), "per_label": per, "prob": prob}


def evaluate(
    model: nn.Module,
    data: Data,
    settings: Mapping[str, Any],
    *,
    device: torch.device,
    task_type: str,
    labels: list[str],
    tta: int = 0,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Loss and AUC (mean and per label) on ``data``, with ``tta`` augmented views (0: centre crop only);
    crop, augmentation and precision from ``settings``, as in ``predict``."""
    prob = predict(model, data, settings, device=device, task_type=task_type, tta=tta, seed=seed, batch_size=batch_size)
    return scores(prob, data, task_type=task_type, labels=labels)


def evaluate_views(
    model: nn.Module,
    data: Data,
    settings: Mapping[str, Any],
    *,
    device: torch.device,
    task_type: str,
    labels: list[str],
    tta: int,
    seed: int = 0,
    batch_size: int | None = None,
    plain: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The scores on the centre crop and (tta > 0, else None) with test-time augmentation, from one pass
    (``predict_views``): what ``evaluate`` gives without and with ``tta``, with one forward pass fewer
    per batch than the two calls. ``plain``: the centre-crop probabilities if known (``predict_views``)."""
    plain, mean = predict_views(
        model, data, settings, device=device, task_type=task_type, tta=tta, seed=seed, batch_size=batch_size,
        plain=plain,
    )  # fmt: skip
    plain_sc = scores(plain, data, task_type=task_type, labels=labels)
    return plain_sc, scores(mean, data, task_type=task_type, labels=labels) if tta > 0 else None
