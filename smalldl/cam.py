"""Where a final model looks: Grad-CAM maps (the maintained ``grad-cam`` library, pytorch_grad_cam) of
one output over a fixed, seeded sample of images, drawn beside each image.

- ``cam_sample``: the sample of a labelled set (the test set): per category, the ``k`` most confident
  true positives (highest probability among positives called positive), false positives (highest among
  negatives called positive) and false negatives (lowest among positives called negative) at a threshold
  chosen on validation; ties are broken by a permutation drawn from ``seed``, so the sample is fixed.
- ``cam_maps``: the Grad-CAM map of one output for each image, on the centre crop the model sees, at the
  last convolution of the body, averaged over the members of the model (each map scaled to [0, 1]).
- ``draw``: a figure with one row per image: the crop and the map over it, titled with its category,
  name and probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CATEGORIES = ("true positive", "false positive", "false negative")


def cam_sample(y: np.ndarray, p: np.ndarray, threshold: float, *, k: int = 3, seed: int = 0) -> list[tuple[str, int]]:
    """(category, index) of up to ``k`` images per category (``CATEGORIES``) at ``p >= threshold``."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    tie = np.random.default_rng(seed).permutation(len(p))  # a fixed order among equal probabilities
    called = p >= threshold
    groups = {
        "true positive": (np.flatnonzero((y == 1) & called), -1),
        "false positive": (np.flatnonzero((y == 0) & called), -1),
        "false negative": (np.flatnonzero((y == 1) & ~called), 1),
    }
    out: list[tuple[str, int]] = []
    for name in CATEGORIES:
        idx, sign = groups[name]
        order = np.lexsort((tie[idx], sign * p[idx]))  # most confident first, then the seeded order
        out += [(name, int(i)) for i in idx[order][:k]]
    return out


def target_layer(net: Any) -> Any:
    """The last convolution of a model's body (its last spatial feature map)."""
    import torch.nn as nn

    convs = [m for m in net.body.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(net.body).__name__} has no convolution for Grad-CAM")
    return convs[-1]


def cam_maps(model: Any, images: np.ndarray, output: int) -> tuple[np.ndarray, np.ndarray]:
    """(the centre crops N x c x c in [0, 1], their Grad-CAM maps of ``output`` N x c x c in [0, 1]) of
    uint8 images (N x height x width) for a ``smalldl.final.FinalModel``: the members' maps averaged."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from smalldl.data.transforms import center_crop, to_tensor

    x = center_crop(to_tensor(images, model.device), int(model.spec["preprocess"]["crop"])).contiguous()
    maps = []
    for net in model.nets:
        net.eval()
        with torch.enable_grad(), GradCAM(model=net, target_layers=[target_layer(net)]) as cam:
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(output)] * len(x)))
    mean = np.mean(np.stack(maps), axis=0)
    top = mean.reshape(len(mean), -1).max(axis=1).reshape(-1, 1, 1)
    mean = np.where(top > 0, mean / np.where(top > 0, top, 1), 0.0)
    return x[:, 0].detach().cpu().numpy(), mean.astype(np.float32)


def draw(
    crops: np.ndarray,
    maps: np.ndarray,
    titles: Sequence[str],
    out: str | Path,
    suptitle: str = "",
) -> None:
    """One row per image: the crop, and the crop with its map over it (jet, alpha 0.45); PNG/PDF/SVG by
    the suffix of ``out``, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smalldl.utils import atomic_path

    n = max(1, len(crops))
    fig, axes = plt.subplots(n, 2, figsize=(5.2, 2.6 * n), squeeze=False)
    for i in range(len(crops)):
        axes[i, 0].imshow(crops[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 1].imshow(crops[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 1].imshow(maps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[i, 0].set_title(titles[i], fontsize=7, loc="left")
    if not len(crops):
        axes[0, 0].text(0.5, 0.5, "no image in the sample", ha="center", va="center")
    for ax in axes.ravel():
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(out).suffix.lstrip(".") or "png")
    plt.close(fig)


def write_maps(model: Any, images: np.ndarray, names: Sequence[str], out_dir: str | Path) -> list[Path]:
    """For new images (``smalldl predict --cam DIR``): per image and output, ``<name>.<output>.png`` in
    ``out_dir`` (the crop and its map); returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    prob = model.probabilities(images)
    for j, label in enumerate(model.names):
        crops, maps = cam_maps(model, images, j)
        for i, name in enumerate(names):
            path = out / f"{Path(name).stem}.{label}.png"
            draw(crops[i : i + 1], maps[i : i + 1], [f"{Path(name).name}: p({label}) = {prob[i, j]:.3f}"], path)
            written.append(path)
    return written
