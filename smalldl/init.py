"""Initialisations of a model's body: PyTorch's default, standard transfer, moment-preserving random.

The head keeps its fresh default init in every case; only ``model.body`` is touched.

``default``: PyTorch's init, nothing changes. ``transfer``: the source body's state_dict is loaded
exactly.

Moment-preserving ("Mean Var Init", Raghu et al. 2019, Transfusion; Romero et al. 2021): a tensor is
*redrawn* by replacing it with i.i.d. draws from N(mean, std^2), where mean and std are those of the
corresponding source tensor (population std over all its elements). This keeps the scale of every
tensor and destroys its features. The authors' published code drew with the *mean* as the standard
deviation; ``tests/unit/test_init.py`` proves the std is the source tensor's std.

``moments``: EVERY parameter tensor of the body is redrawn from its own source tensor's moments --
conv and linear weights, biases, and the weights and biases of BatchNorm and the other normalisation
layers alike. The BatchNorm running statistics (buffers, not parameters) are not redrawn (a redrawn
variance could be negative): they stay the source's, as in the authors' code
(distribution_transfer_learning/emphysema.py redraws the state_dict entries named weight or bias
only), and training re-estimates them from the target data (train.frozen_bn). Every other buffer is
loaded from the source unchanged.

``momentsconv``: the source body state is first loaded exactly (as in ``transfer``); then ONLY the
weights of the conv layers are redrawn from their moments. Everything else -- BatchNorm weights,
biases and running statistics, conv biases, any linear or other layers -- stays bit-identical to the
source.

Draws are deterministic given ``seed``: each tensor has its own generator seeded from (seed, state_dict
key), so a conv weight gets the same draw under ``moments`` and ``momentsconv`` with the same seed and
the two variants differ exactly in the tensors that only ``moments`` redraws.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn

from smalldl.config import INITS

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _generator(seed: int, key: str) -> torch.Generator:
    """A generator for one tensor, seeded from (seed, key) and independent of the order of the draws."""
    digest = hashlib.blake2b(f"{int(seed)}\0{key}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def _redraw(tensor: torch.Tensor, source: torch.Tensor, gen: torch.Generator) -> None:
    """Fill ``tensor`` with i.i.d. N(mean, std^2) draws, mean and std those of ``source``."""
    if tuple(source.shape) != tuple(tensor.shape):
        raise RuntimeError(f"source tensor of shape {tuple(source.shape)} does not fit {tuple(tensor.shape)}")
    src = source.detach().double()
    mean = float(src.mean())
    std = float(src.std(unbiased=False)) if src.numel() > 1 else 0.0
    draw = torch.randn(tensor.shape, generator=gen, dtype=torch.float64) * std + mean
    with torch.no_grad():
        tensor.copy_(draw.to(tensor.dtype))


def moment_preserving(
    body: nn.Module, source_state: Mapping[str, torch.Tensor], seed: int, conv_only: bool = False
) -> dict[str, int]:
    """Moment-preserving init of ``body`` from ``source_state`` (a state_dict of the same body).

    The source state is loaded first (strictly: a key or shape mismatch raises RuntimeError), then
    conv_only=False (``moments``): every parameter is redrawn from its source tensor's mean and std,
    normalisation layers included (running statistics stay the source's); conv_only=True
    (``momentsconv``): only conv weights are redrawn, the rest stays the source's.
    Returns counts: state entries loaded, tensors redrawn."""
    body.load_state_dict(dict(source_state), strict=True)
    if conv_only:
        targets = [
            (f"{mod_name}.weight" if mod_name else "weight", module.weight)
            for mod_name, module in body.named_modules()
            if isinstance(module, _CONV) and module.weight is not None
        ]
    else:
        targets = list(body.named_parameters())
    redrawn = 0
    for key, param in targets:
        if param.numel() == 0:
            continue
        _redraw(param, source_state[key], _generator(seed, key))
        redrawn += 1
    return {"loaded": len(source_state), "redrawn": redrawn}


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
