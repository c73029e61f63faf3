"""smalldl.kernels: the depthwise weight gradient for small CPU maps and the 1 x 1 convolutions as matrix
products give PyTorch's results, and speed_up changes only what it should."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smalldl import kernels, models


def native_weight_grad(x, go, w, stride, padding):
    return torch.ops.aten.convolution_backward(
        go, x, w, None, list(stride), list(padding), [1, 1], False, [0, 0], w.shape[0], [False, True, False]
    )[1]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("c", "size", "k", "stride"),
    [(64, 2, 5, 1), (48, 3, 5, 1), (32, 2, 3, 1), (40, 7, 5, 2), (24, 6, 3, 2), (16, 9, (3, 5), 1)],
)
def test_the_weight_gradient_is_pytorchs(c, size, k, stride, channels_last):
    torch.manual_seed(0)
    kh, kw = (k, k) if isinstance(k, int) else k
    padding = (kh // 2, kw // 2)
    x = torch.randn(5, c, size, size)
    w = torch.randn(c, 1, kh, kw)
    go = torch.randn_like(F.conv2d(x, w, None, stride, padding, 1, c))
    if channels_last:
        x, go = x.contiguous(memory_format=torch.channels_last), go.contiguous(memory_format=torch.channels_last)
    ours = kernels.depthwise_weight_grad(x, go, (kh, kw), (stride, stride), padding)
    torch.testing.assert_close(ours, native_weight_grad(x, go, w, (stride, stride), padding), rtol=1e-5, atol=1e-5)


def test_a_sped_up_lite0_trains_as_before_with_the_same_state_and_forward():
    torch.manual_seed(0)
    plain = models.build("efficientnet_lite0", 2).to(memory_format=torch.channels_last).train()
    fast = copy.deepcopy(plain)
    changed = kernels.speed_up(fast, torch.device("cpu"))
    depthwise = [m for m in plain.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    pointwise = [m for m in plain.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(depthwise) == 16  # 12 plain, 4 strided TF-"same" (timm)
    assert len(pointwise) == 32  # the expansions and projections of the blocks, and the head
    assert changed == len(depthwise) + len(pointwise)
    assert {type(m).__name__ for m in fast.modules() if isinstance(m, nn.Conv2d) and m.groups > 1} == {
        "FastDepthwiseConv2d",
        "FastDepthwiseConv2dSame",
    }
    assert {type(m).__name__ for m in fast.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)} == {
        "FastPointwiseConv2d"
    }
    assert list(fast.state_dict()) == list(plain.state_dict())
    # The gradients are judged against float64 (PyTorch's own kernels, exact to ~1e-15 here), not against
    # PyTorch's float32 ones: through train-mode BatchNorm on 6 images, float32 rounding grows to ~1% of a
    # layer's largest gradient in the first blocks, more with PyTorch's kernels on some CPUs (oneDNN at one
    # thread on a Sapphire Rapids host) than with ours, so a comparison of the two float32 runs fails there
    # whichever is right. A wrong gradient is wrong by its own size, far beyond rounding.
    reference = copy.deepcopy(plain).double()
    x = torch.rand(6, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (6, 2)).float()
    outs = []
    for m, dtype in ((plain, torch.float32), (fast, torch.float32), (reference, torch.float64)):
        m.zero_grad()
        out = m(x.to(dtype))
        F.binary_cross_entropy_with_logits(out, y.to(dtype)).backward()
        outs.append((out.detach().double(), [(n, p.grad.double()) for n, p in m.named_parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)  # the 1 x 1 convs by matmul
    torch.testing.assert_close(outs[1][0], outs[2][0], rtol=1e-4, atol=1e-4)
    for (name, ours), (_, native), (_, exact) in zip(outs[1][1], outs[0][1], outs[2][1], strict=True):
        scale = max(float(exact.abs().max()), 1e-3)  # a few BatchNorm biases have an exact gradient of 0
        ours_err, native_err = float((ours - exact).abs().max()) / scale, float((native - exact).abs().max()) / scale
        assert ours_err <= max(2 * native_err, 1e-3), f"{name}: ours {ours_err:.1e}, PyTorch's {native_err:.1e}"


def test_only_channels_last_maps_smaller_than_the_kernel_in_training_on_the_cpu_take_the_new_gradient():
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    assert kernels.speed_up(conv, torch.device("cpu")) == 1
    cl = torch.channels_last
    small = conv(torch.randn(2, 8, 4, 4).contiguous(memory_format=cl))  # the 5 x 5 kernel is larger than the map
    large = conv(torch.randn(2, 8, 5, 5).contiguous(memory_format=cl))  # as large as the map
    assert type(small.grad_fn).__name__ == "_DepthwiseConvBackward"
    assert type(large.grad_fn).__name__ == "ConvolutionBackward0"
    # contiguous (NCHW) inputs keep PyTorch's kernel, and so does more than one thread: there ours made a
    # whole step slower (--matrix)
    assert type(conv(torch.randn(2, 8, 4, 4)).grad_fn).__name__ == "ConvolutionBackward0"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert type(conv(torch.randn(2, 8, 4, 4).contiguous(memory_format=cl)).grad_fn).__name__ == (
            "ConvolutionBackward0"
        )
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        assert conv(torch.randn(2, 8, 4, 4).contiguous(memory_format=cl)).grad_fn is None
    conv.weight.requires_grad_(False)  # a frozen group: PyTorch's own kernel
    x = torch.randn(2, 8, 4, 4, requires_grad=True).contiguous(memory_format=cl)
    assert type(conv(x).grad_fn).__name__ == "ConvolutionBackward0"


def _fast_layers(model: nn.Module) -> int:
    return sum(type(m).__name__.startswith("Fast") for m in model.modules())


@pytest.mark.parametrize("setting", ["off", "on"])
def test_train_cpu_kernels_swaps_the_layers_only_when_on(setting):
    """train.cpu_kernels (default off, the paper's protocol): fit and the lr finder give the model the
    kernels only when it is on; with off every convolution stays PyTorch's."""
    from smalldl import train
    from smalldl.config import train_settings
    from smalldl.data.arrays import Data

    assert train_settings({})["cpu_kernels"] == "off"
    settings = train_settings(
        {"epochs": 1, "batch_size": 4, "crop": 20, "device": "cpu", "checkpoint": False, "channels_last": "on",
         "cpu_kernels": setting, "lr_finder": {"steps": 5}}
    )  # fmt: skip
    rng = np.random.default_rng(0)
    data = Data(rng.integers(0, 255, (8, 24, 24), dtype=np.uint8), (rng.random((8, 1)) < 0.5).astype(np.float32))
    data.targets[:2] = [[0.0], [1.0]]
    wanted = (lambda n: n > 0) if setting == "on" else (lambda n: n == 0)
    torch.manual_seed(0)
    model = models.build("efficientnet_lite0", 1)
    train.lr_sweep(model, data, settings, task_type="binary", seed=0)
    assert wanted(_fast_layers(model))
    model = models.build("efficientnet_lite0", 1)
    train.fit(model, data, data, settings, train.Run(task_type="binary", labels=["y"], seed=0))
    assert wanted(_fast_layers(model))
    assert kernels.apply(models.build("efficientnet_lite0", 1), settings, torch.device("cuda")) == 0


def test_speed_up_leaves_cuda_models_and_other_convolutions_alone():
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Conv2d(8, 16, 1),  # pointwise
        nn.Conv2d(16, 16, 3, padding=1),  # neither depthwise nor pointwise
        nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16),  # dilated
        nn.Conv2d(16, 16, 3, padding=1, groups=16, padding_mode="reflect"),
        nn.Conv2d(16, 16, 3, padding="same", groups=16),
        nn.Conv2d(16, 16, 1, stride=2),  # 1 x 1 but strided (ResNet's downsampling)
        nn.Conv2d(16, 16, 1, padding=1),  # padded
        nn.Conv2d(16, 16, 1, groups=2),  # grouped
    )
    assert kernels.speed_up(copy.deepcopy(model), torch.device("cuda")) == 0
    assert kernels.speed_up(model, torch.device("cpu")) == 2
    assert type(model[0]) is kernels.FastDepthwiseConv2d and type(model[1]) is kernels.FastPointwiseConv2d
    assert all(type(m) is nn.Conv2d for m in model[2:])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(
    ("b", "c_in", "c_out", "size"), [(5, 192, 1152, 2), (3, 40, 24, 3), (4, 16, 8, 1), (2, 8, 12, 4)]
)
def test_a_pointwise_convolution_as_a_matrix_product_is_pytorchs(b, c_in, c_out, size, bias):
    torch.manual_seed(0)
    x = torch.randn(b, c_in, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (torch.randn(c_out, c_in, 1, 1) / c_in**0.5).requires_grad_()
    bi = torch.randn(c_out).requires_grad_() if bias else None
    go = torch.randn(b, c_out, size, size)
    results = []
    for conv in (F.conv2d, kernels.pointwise_conv):
        x.grad = w.grad = None
        if bi is not None:
            bi.grad = None
        out = conv(x, w, bi)
        out.backward(go)
        results.append([out.detach(), x.grad, w.grad] + ([bi.grad] if bias else []))
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)  # as the convolution's output
    for ours, native in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, native, rtol=1e-4, atol=1e-5)


def test_only_small_channels_last_cpu_maps_take_the_matrix_product():
    conv = nn.Conv2d(8, 4, 1)
    kernels.speed_up(conv, torch.device("cpu"))
    cl = torch.channels_last
    side = int(kernels.MATMUL_MAX_PIXELS**0.5)
    small = conv(torch.randn(2, 8, side, side).contiguous(memory_format=cl))
    large = conv(torch.randn(2, 8, side + 1, side + 1).contiguous(memory_format=cl))
    contiguous = conv(torch.randn(2, 8, side, side))  # NCHW: the pixels are not a matrix without a copy
    assert type(small.grad_fn).__name__ == "PermuteBackward0"
    assert type(large.grad_fn).__name__ == "ConvolutionBackward0"
    assert type(contiguous.grad_fn).__name__ == "ConvolutionBackward0"
    with torch.no_grad():  # evaluation takes it too
        x = torch.randn(3, 8, 2, 2).contiguous(memory_format=cl)
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias), rtol=1e-5, atol=1e-6)
