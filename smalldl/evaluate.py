"""Evaluation: predictions of a model on cached images (centre crop or test-time augmentation), their
loss and ROC AUC per label and the mean, for binary, multilabel and multiclass; and the precision
settings (bf16 autocast, channels_last) that training and evaluation share.

``predict`` and ``evaluate`` take the crop, flip, rotation, amp, channels_last and batch size
(``eval_batch_size``) of evaluation from the ``settings`` mapping (the ``train_settings`` schema) and
nothing else, so every caller evaluates as the model was trained. ``predict_views`` and
``evaluate_views`` give the centre-crop and the TTA result of one pass (the centre crop is the TTA's
first view). Torch is imported inside the functions that need it: the AUC helpers alone (radiomics)
import only numpy.

The AUC is the Mann-Whitney statistic with average ranks for ties, which is exactly scikit-learn's
``roc_auc_score`` for binary labels (a test checks it) without importing scikit-learn, which costs
every training job a second or more of start-up.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

    from smalldl.train import Data


def roc_auc_score(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of binary ``y_true`` (0/1 or bool) against ``score``; ties count one half."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC is undefined with one class only")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks (1-based) over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_per_label(y_true: np.ndarray, prob: np.ndarray, labels: list[str]) -> dict[str, float]:
    """AUC for each label column over the images where that label is known (a negative value, -1 =
    uncertain, masks it); NaN where a label has only one class among them."""
    y_true = np.asarray(y_true).reshape(len(y_true), -1)
    prob = np.asarray(prob).reshape(len(prob), -1)
    out: dict[str, float] = {}
    for j, name in enumerate(labels):
        known = y_true[:, j] >= 0
        col, score = y_true[known, j], prob[known, j]
        out[name] = float(roc_auc_score(col, score)) if 0 < col.sum() < len(col) else math.nan
    return out


def masked_bce(y_true: np.ndarray, prob: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities over the known labels (negative = masked);
    NaN when none is known."""
    y = np.asarray(y_true, dtype=np.float64).reshape(len(prob), -1)
    known = y >= 0
    if not known.any():
        return math.nan
    p = np.clip(np.asarray(prob, dtype=np.float64).reshape(y.shape), eps, 1 - eps)
    terms = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(terms.mean() if known.all() else terms[known].mean())


def mean_auc(per_label: dict[str, float]) -> float:
    """Mean over the labels whose AUC is defined (the paper's multilabel metric)."""
    values = [v for v in per_label.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def multiclass_scores(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Accuracy and macro one-vs-rest AUC over the classes present."""
    y_true = np.asarray(y_true).astype(int)
    acc = float((prob.argmax(1) == y_true).mean())
    present = np.unique(y_true)
    if len(present) < 2:
        return {"accuracy": acc, "auc": math.nan}
    aucs = [roc_auc_score(y_true == c, prob[:, c]) for c in present]
    return {"accuracy": acc, "auc": float(np.mean(aucs))}


# ----------------------------------------------------------------------------------------- precision


def use_bf16(settings: Mapping[str, Any], device: torch.device) -> bool:
    """bf16 autocast: ``bf16`` / ``off`` force it. The training jobs resolve ``auto`` by the device rule
    before training (``smalldl.formats.resolve``: bf16 on CUDA where the GPU supports it); an ``auto`` left
    unresolved (a library caller) is on for CUDA, off on a CPU."""
    amp = settings.get("amp", "auto")
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def use_channels_last(settings: Mapping[str, Any], device: torch.device) -> bool:
    """channels_last memory format: ``on`` / ``off`` force it; ``auto`` as ``use_bf16``'s."""
    mode = settings.get("channels_last", "auto")
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def autocast(settings: Mapping[str, Any], device: torch.device) -> torch.autocast:
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(settings, device))


# ------------------------------------------------------------------------------------------- compile

_COMPILED = "_smalldl_compiled"  # a model's torch.compile wrapper, in its __dict__: not a submodule


def compiled(model: nn.Module, settings: Mapping[str, Any]) -> nn.Module:
    """What training steps and evaluation call: ``model`` itself (``compile: off``), or its
    ``torch.compile`` wrapper, made once per model and kept with it, so one run compiles once (dynamo
    recompiles only when a guard changes: train/eval mode, trainable groups, a new batch shape). The
    wrapper shares the model's parameters; state_dicts, checkpoints and digests are taken from the model
    itself, so their keys carry no ``_orig_mod.`` prefix and match an uncompiled run's."""
    if settings.get("compile", "off") == "off":
        return model
    net = model.__dict__.get(_COMPILED)
    if net is not None and getattr(net, "_orig_mod", None) is model:
        return net
    import torch

    try:
        net = torch.compile(model)
    except Exception as e:  # e.g. dynamo unsupported on this Python / torch
        raise _compile_failure(e) from e
    model.__dict__[_COMPILED] = net  # bypasses nn.Module.__setattr__: no submodule, state_dict unchanged
    return net


def _compile_failure(e: BaseException) -> Exception:
    from smalldl.errors import InputError

    first = (str(e).strip().splitlines() or [""])[0][:300]
    return InputError(
        f"train.compile: on, but torch.compile failed on this platform ({type(e).__name__}: {first}); "
        "set train.compile: off"
    )


def _is_compile_error(e: BaseException) -> bool:
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError

    return isinstance(e, TorchDynamoException | CppCompileError)


@contextmanager
def compile_errors(settings: Mapping[str, Any]) -> Iterator[None]:
    """Turn a failure of dynamo / inductor (no C++ compiler, an unsupported platform), raised at the first
    call of a compiled model or its first backward, into one InputError naming ``train.compile``."""
    try:
        yield
    except Exception as e:
        if settings.get("compile", "off") != "off" and _is_compile_error(e):
            raise _compile_failure(e) from e
        raise


# ---------------------------------------------------------------------------------------- evaluation


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
    import torch

    from smalldl.data.transforms import apply_augment, center_crop, to_tensor, tta_draws

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
