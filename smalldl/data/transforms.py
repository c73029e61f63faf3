"""Image transforms on the GPU-friendly side of the cache (as torchvision's references/classification
presets.py): uint8 images to float tensors, the centre crop of evaluation, the training augmentation
(random rotation, horizontal flip and crop as one affine resampling) and the test-time augmentation views.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W) -> float (B, 1, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1).float().div_(255.0)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def draw_augment(
    b: int, h: int, w: int, crop: int, flip: bool, rotate: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random draws of ``augment`` for ``b`` images of ``h`` x ``w``: angles (radians, float64), flip
    signs, crop tops and lefts, drawn from ``gen`` in this order."""
    if crop > h or crop > w:
        raise ValueError(f"crop {crop} is larger than the images ({h}x{w})")
    angle = (torch.rand(b, generator=gen, dtype=torch.float64) * 2 - 1) * math.radians(rotate)
    sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    tops = torch.randint(0, h - crop + 1, (b,), generator=gen)
    lefts = torch.randint(0, w - crop + 1, (b,), generator=gen)
    return angle, sign, tops, lefts


def apply_augment(
    x: torch.Tensor,
    draws: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    crop: int,
    flip: bool,
    rotate: float,
) -> torch.Tensor:
    """``augment`` with given draws (``draw_augment``'s, one per image of ``x``)."""
    angle, sign, tops, lefts = draws
    b, _, h, w = x.shape
    if rotate == 0 and not flip:  # a plain crop: exact pixels, no resampling
        pairs = zip(tops.tolist(), lefts.tolist(), strict=True)
        return torch.stack([x[i, :, t : t + crop, l_ : l_ + crop] for i, (t, l_) in enumerate(pairs)])
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = crop / w, crop / h
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = sx * cos * sign, -sx * sin
    theta[:, 1, 0], theta[:, 1, 1] = sy * sin * sign, sy * cos
    theta[:, 0, 2] = (lefts + crop / 2) / w * 2 - 1
    theta[:, 1, 2] = (tops + crop / 2) / h * 2 - 1
    grid = affine_grid(theta.to(x.device, x.dtype), crop, crop)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, [b, c, h, w], align_corners=False)``, computed separably: x' = t00 x + t01 y +
    t02 and y' = t10 x + t11 y + t12 over the pixel centres x, y in (-1, 1). torch's version multiplies a
    (b, h*w, 3) base grid by theta in one batched matmul with an inner dimension of 3, which on a CPU took
    two thirds of a batch's augmentation at 236 px (``benchmarks/peer_fastai.py --only b``); the result
    is the same up to float rounding (a test)."""
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    t = theta[:, :, :, None, None]  # b, 2, 3, 1, 1
    # b x 2 x h x w: the x part (varies along w), the y part and the shift (along h), then (b, h, w, 2)
    grid = t[:, :, 0] * xs.view(1, 1, 1, w) + (t[:, :, 1] * ys.view(1, 1, h, 1) + t[:, :, 2])
    return grid.permute(0, 2, 3, 1)


def augment(x: torch.Tensor, crop: int, flip: bool, rotate: float, gen: torch.Generator) -> torch.Tensor:
    """Random rotation (uniform in +-rotate degrees, about the crop's centre), horizontal flip (p=0.5)
    and random crop, per image, as one affine resampling (one grid_sample for the whole batch: no
    per-image Python work, so it keeps a GPU busy). Pixels rotated in from outside the image are 0."""
    b, _, h, w = x.shape
    return apply_augment(x, draw_augment(b, h, w, crop, flip, rotate, gen), crop, flip, rotate)


def tta_views(
    x: torch.Tensor, crop: int, flip: bool, rotate: float, views: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Test-time augmentation: the original (centre crop) first, then ``views`` augmented copies
    (random flip, rotation and crop, as in training). The authors' code left the original out."""
    out = [center_crop(x, crop)]
    out.extend(augment(x, crop, flip, rotate, gen) for _ in range(views))
    return out


#: The TTA views are drawn for blocks of this many images in data order, whatever the evaluation batch
#: size (the views, and so a run's TTA predictions, do not depend on ``eval_batch_size``); 128 was the one
#: evaluation batch size before ``eval_batch_size`` existed, so the views are the ones drawn then.
TTA_DRAW_BLOCK = 128


def tta_draws(
    n: int, h: int, w: int, crop: int, flip: bool, rotate: float, views: int, gen: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The draws of ``views`` augmented views of ``n`` images (one ``draw_augment`` tuple per view, for
    all ``n``), drawn from ``gen`` block by block of ``TTA_DRAW_BLOCK`` images and view by view within a
    block: the draws of ``tta_views`` called on each block in turn."""
    blocks = [
        [draw_augment(min(TTA_DRAW_BLOCK, n - i), h, w, crop, flip, rotate, gen) for _ in range(views)]
        for i in range(0, n, TTA_DRAW_BLOCK)
    ]
    return [tuple(torch.cat(parts) for parts in zip(*(blk[v] for blk in blocks), strict=True)) for v in range(views)]
