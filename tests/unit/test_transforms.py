"""smalldl.data.transforms.affine_grid is torch's affine_grid (align_corners=False), computed separably."""

import pytest
import torch
import torch.nn.functional as F

from smalldl.data.transforms import affine_grid, apply_augment, draw_augment, to_tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("h", "w"), [(236, 236), (48, 52), (1, 7)])
def test_affine_grid_is_torchs(h, w, dtype):
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(h * w), dtype=dtype)
    ours = affine_grid(theta, h, w)
    ref = F.affine_grid(theta, [5, 1, h, w], align_corners=False)
    assert ours.shape == ref.shape == (5, h, w, 2) and ours.dtype == dtype
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=2e-6)


def test_the_augmentation_resamples_as_with_torchs_grid():
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (8, 60, 60), dtype=np.uint8)
    x = to_tensor(images, torch.device("cpu"))
    draws = draw_augment(8, 60, 60, 52, True, 10.0, torch.Generator().manual_seed(1))
    ours = apply_augment(x, draws, 52, True, 10.0)
    angle, sign, tops, lefts = draws  # the same affine map, through F.affine_grid
    cos, sin, s = torch.cos(angle), torch.sin(angle), 52 / 60
    theta = torch.zeros(8, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = s * cos * sign, -s * sin
    theta[:, 1, 0], theta[:, 1, 1] = s * sin * sign, s * cos
    theta[:, 0, 2], theta[:, 1, 2] = (lefts + 26) / 60 * 2 - 1, (tops + 26) / 60 * 2 - 1
    grid = F.affine_grid(theta.float(), [8, 1, 52, 52], align_corners=False)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
