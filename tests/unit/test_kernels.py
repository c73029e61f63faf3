"""smalldl.kernels: the depthwise weight gradient for small CPU maps gives PyTorch's gradients, and
speed_up changes only what it should."""

import copy

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
    assert changed == len(depthwise) == 16  # every depthwise conv: 12 plain, 4 strided TF-"same" (timm)
    assert {type(m).__name__ for m in fast.modules() if isinstance(m, nn.Conv2d) and m.groups > 1} == {
        "FastDepthwiseConv2d",
        "FastDepthwiseConv2dSame",
    }
    assert list(fast.state_dict()) == list(plain.state_dict())
    x = torch.rand(6, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (6, 2)).float()
    outs = []
    for m in (plain, fast):
        m.zero_grad()
        out = m(x)
        F.binary_cross_entropy_with_logits(out, y).backward()
        outs.append((out.detach(), [p.grad.clone() for p in m.parameters()]))
    assert torch.equal(outs[0][0], outs[1][0])  # PyTorch's forward, unchanged
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_only_maps_smaller_than_the_kernel_in_training_on_the_cpu_take_the_new_gradient():
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    assert kernels.speed_up(conv, torch.device("cpu")) == 1
    small = conv(torch.randn(2, 8, 4, 4))  # the 5 x 5 kernel is larger than the map
    large = conv(torch.randn(2, 8, 5, 5))  # as large as the map
    assert type(small.grad_fn).__name__ == "_DepthwiseConvBackward"
    assert type(large.grad_fn).__name__ == "ConvolutionBackward0"
    with torch.no_grad():
        assert conv(torch.randn(2, 8, 4, 4)).grad_fn is None
    conv.weight.requires_grad_(False)  # a frozen group: PyTorch's own kernel
    assert type(conv(torch.randn(2, 8, 4, 4, requires_grad=True)).grad_fn).__name__ == "ConvolutionBackward0"


def test_speed_up_leaves_cuda_models_and_other_convolutions_alone():
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Conv2d(8, 16, 3, padding=1),  # not depthwise
        nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16),  # dilated
        nn.Conv2d(16, 16, 3, padding=1, groups=16, padding_mode="reflect"),
        nn.Conv2d(16, 16, 3, padding="same", groups=16),
    )
    assert kernels.speed_up(copy.deepcopy(model), torch.device("cuda")) == 0
    assert kernels.speed_up(model, torch.device("cpu")) == 1
    assert type(model[0]) is kernels.FastDepthwiseConv2d and all(type(m) is nn.Conv2d for m in model[1:])
