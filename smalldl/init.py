"""Initialisations of a model's body: PyTorch's default, standard transfer, moment-preserving random.

Moment-preserving ("Mean Var Init", Raghu et al. 2019, Transfusion): each weight tensor is redrawn
i.i.d. from N(mean, std^2) of the corresponding pretrained tensor, which keeps the scale of every layer
and destroys its features. BatchNorm layers are set to identity (weight 1, bias 0, running mean 0,
running variance 1). The authors' published code drew with the *mean* as the standard deviation;
``tests/unit/test_init.py`` proves the std is the pretrained tensor's std.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from smalldl.config import INITS

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _redraw(tensor: torch.Tensor, source: torch.Tensor, gen: torch.Generator) -> None:
    src = source.detach().double()
    mean = float(src.mean())
    std = float(src.std(unbiased=False)) if src.numel() > 1 else 0.0
    draw = torch.randn(tensor.shape, generator=gen, dtype=torch.float64) * std + mean
    tensor.data.copy_(draw.to(tensor.dtype))


def _bn_identity(module: nn.Module) -> None:
    with torch.no_grad():
        if getattr(module, "weight", None) is not None:
            module.weight.fill_(1.0)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()
        if getattr(module, "running_mean", None) is not None:
            module.running_mean.zero_()
            module.running_var.fill_(1.0)


def moment_preserving(
    body: nn.Module, source_state: Mapping[str, torch.Tensor], seed: int, conv_only: bool = False
) -> dict[str, int]:
    """Redraw ``body``'s weights from the moments of ``source_state`` (a state_dict of the same body).

    conv_only=False: every weight and bias tensor of conv and linear layers (and any other parameter
    outside normalisation layers) is redrawn. conv_only=True: only conv weights are redrawn; the rest
    keeps PyTorch's default init. Normalisation layers become identity either way.
    Returns counts of tensors redrawn and norm layers reset."""
    gen = torch.Generator().manual_seed(int(seed))
    redrawn, norms = 0, 0
    missing = [k for k in body.state_dict() if k not in source_state]
    if missing:
        raise ValueError(f"source weights lack {missing[:3]}")
    for mod_name, module in body.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(module, _NORM) or isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            _bn_identity(module)
            norms += 1
            continue
        for p_name, param in module.named_parameters(recurse=False):
            if conv_only and not (isinstance(module, _CONV) and p_name == "weight"):
                continue
            _redraw(param, source_state[prefix + p_name], gen)
            redrawn += 1
    return {"redrawn": redrawn, "norm_layers": norms}


def initialise(model: nn.Module, init: str, source_state: Mapping[str, torch.Tensor] | None, seed: int) -> dict:
    """Apply ``init`` to ``model.body`` (the head keeps its fresh default init in every case)."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}")
    if init == "default":
        return {}
    if source_state is None:
        raise ValueError(f"init {init!r} needs source weights")
    if init == "transfer":
        model.body.load_state_dict(dict(source_state), strict=True)
        return {"loaded": len(source_state)}
    return moment_preserving(model.body, source_state, seed, conv_only=(init == "momentsconv"))
