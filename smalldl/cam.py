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


#: Grad-CAM's layer is the last convolution whose map is at least this many pixels a side (where one is):
#: the body's last maps of a small crop are 1 x 1, which can only say "everywhere".
MIN_MAP = 4


def target_layer(net: Any, x: Any) -> Any:
    """The last convolution of a model's body whose output map on ``x`` is at least ``MIN_MAP`` pixels a
    side (else the last convolution)."""
    import torch
    import torch.nn as nn

    convs = [m for m in net.body.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(net.body).__name__} has no convolution for Grad-CAM")
    sizes: dict[int, int] = {}
    hooks = [c.register_forward_hook(lambda m, i, o: sizes.__setitem__(id(m), min(o.shape[-2:]))) for c in convs]
    try:
        with torch.no_grad():
            net(x[:1])
    finally:
        for h in hooks:
            h.remove()
    large = [c for c in convs if sizes.get(id(c), 0) >= MIN_MAP]
    return large[-1] if large else convs[-1]


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
        with torch.enable_grad(), GradCAM(model=net, target_layers=[target_layer(net, x)]) as cam:
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
    per_row: int = 1,
) -> None:
    """Each image as a pair, the crop and the crop with its map over it (jet, alpha 0.45), ``per_row``
    pairs to a row; PNG/PDF/SVG by the suffix of ``out``, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smalldl.utils import atomic_path

    rows = max(1, -(-len(crops) // per_row))
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(2.6 * per_row * 2, 2.8 * rows + 0.4), squeeze=False)
    for i in range(len(crops)):
        r, c = divmod(i, per_row)
        left, right = axes[r, 2 * c], axes[r, 2 * c + 1]
        left.imshow(crops[i], cmap="gray", vmin=0, vmax=1)
        right.imshow(crops[i], cmap="gray", vmin=0, vmax=1)
        right.imshow(maps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        left.set_title(titles[i], fontsize=7, loc="left")
    if not len(crops):
        axes[0, 0].text(0.5, 0.5, "no image in the sample", ha="center", va="center")
    for ax in axes.ravel():
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97) if suptitle else None)
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
