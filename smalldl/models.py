"""Architectures: a body from torchvision (any classification model by name) or a small CPU CNN,
a new randomly initialised linear head, input normalisation, and source checkpoints.

Inputs are single-channel images in [0, 1] of shape (B, 1, H, W); the model repeats them to three
channels and normalises them as its body expects (ImageNet statistics for torchvision bodies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from smalldl.errors import InputError
from smalldl.utils import atomic_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU-pool blocks and global average pooling: a fast body for CPU demos and tests."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in widths:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            layers += [nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


def _torchvision_body(arch: str) -> tuple[nn.Module, int]:
    import torchvision

    try:
        model = torchvision.models.get_model(arch, weights=None)
    except ValueError:
        raise InputError(f"unknown architecture {arch!r} (smallcnn or a torchvision classification model)") from None
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        linear = (
            head
            if isinstance(head, nn.Linear)
            else next((m for m in reversed(list(head.modules())) if isinstance(m, nn.Linear)), None)
        )
        if linear is not None:
            setattr(model, attr, nn.Identity())
            return model, linear.in_features
    raise InputError(f"architecture {arch!r}: cannot find its classification head")


class Classifier(nn.Module):
    """body (features) + head (new linear layer); normalisation buffers are part of the model."""

    def __init__(self, arch: str, num_outputs: int) -> None:
        super().__init__()
        self.arch = arch
        if arch == "smallcnn":
            body: nn.Module = SmallCNN()
            num_features = body.num_features  # type: ignore[assignment]
        else:
            body, num_features = _torchvision_body(arch)
        self.body = body
        self.head = nn.Linear(int(num_features), num_outputs)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        return self.head(self.body(x))


def build(arch: str, num_outputs: int) -> Classifier:
    """A model with PyTorch's default initialisation and a head of ``num_outputs`` units."""
    return Classifier(arch, num_outputs)


def save_source(model: Classifier, path: str | Path, meta: dict[str, Any]) -> None:
    """Save the body of a pretrained source model (the head is task-specific and dropped)."""
    state = {k: v.detach().cpu() for k, v in model.body.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"arch": model.arch, "body": state, "meta": meta}, tmp)


def load_source(model: Classifier, path: str | Path) -> dict[str, Any]:
    """Copy a source checkpoint's body weights into ``model`` (standard transfer). Returns its meta."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"source checkpoint {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise InputError(f"source checkpoint {path} cannot be read ({exc})") from None
    if not isinstance(ckpt, dict) or "body" not in ckpt:
        raise InputError(f"source checkpoint {path} has no 'body' weights")
    if ckpt.get("arch") != model.arch:
        raise InputError(f"source checkpoint {path} is a {ckpt.get('arch')!r}, not a {model.arch!r}")
    try:
        model.body.load_state_dict(ckpt["body"], strict=True)
    except RuntimeError as exc:
        raise InputError(f"source checkpoint {path} does not fit {model.arch}: {exc}") from None
    return dict(ckpt.get("meta", {}))
