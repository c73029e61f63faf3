"""A faster weight gradient for depthwise convolutions whose kernel is larger than their feature map, on
the CPU.

PyTorch's CPU kernel for the weight gradient of a depthwise convolution (``groups == in_channels ==
out_channels``) is pathologically slow when the kernel is larger than the feature map, so that most of each
window is padding: for EfficientNet-Lite0's last blocks at the demo's 48 px (1152 channels, 5 x 5 kernels on
2 x 2 maps, batch 16) it takes 10-20 ms, 30-50 times the layer's forward pass, and these few layers took
about 40% of a whole training step. The gradient itself is small: for each of the k x k kernel offsets it is
one product of two ``batch x channels x H x W`` tensors summed over batch and space.
``depthwise_weight_grad`` computes it that way, 5-15x faster on those layers; on maps as large as the
kernel or larger PyTorch's kernel is fine and is kept (``takes_fast_grad``). ``benchmarks/depthwise_grad.py``
measures both, layer by layer, and a whole training step without and with this (1.7x at 48 px).

``speed_up(model, device)`` gives a model's eligible convolutions (plain ``nn.Conv2d`` and timm's TF-"same"
``Conv2dSame``, depthwise, undilated, zero padding) this backward on the CPU; the forward pass and the input
gradient stay PyTorch's own, the parameters and ``state_dict`` are untouched, CUDA runs are not affected. The
weight gradient differs from the native one only by float rounding (summation order): tests check both
gradients against PyTorch's.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def depthwise_weight_grad(
    x: torch.Tensor, grad_out: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> torch.Tensor:
    """The gradient of a depthwise convolution's weight (shape ``C x 1 x kh x kw``): for each kernel offset
    (i, j), ``sum over b, h, w of x_padded[b, c, i + sh * h, j + sw * w] * grad_out[b, c, h, w]``."""
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    _, c, ho, wo = grad_out.shape
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    sums = [
        (xp[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] * grad_out).sum((0, 2, 3))
        for i in range(kh)
        for j in range(kw)
    ]
    return torch.stack(sums, 1).view(c, 1, kh, kw)


class _DepthwiseConv(torch.autograd.Function):
    """A depthwise convolution: PyTorch's forward and input gradient, ``depthwise_weight_grad``'s weight
    gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding):  # noqa: ANN205
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):  # noqa: ANN205
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0],
                weight.shape[0], [True, False, False],
            )[0]  # fmt: skip
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad_out, tuple(weight.shape[2:]), ctx.stride, ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


def takes_fast_grad(input: torch.Tensor, weight: torch.Tensor) -> bool:
    """Training on the CPU, and the kernel is larger than the (unpadded) input map, so that most of each
    window is padding: where PyTorch's weight gradient is slow (``benchmarks/depthwise_grad.py``: 5-15x
    slower than ``depthwise_weight_grad`` there, and up to 10x faster where the map is as large as the
    kernel or larger)."""
    training = weight.requires_grad and torch.is_grad_enabled()
    too_small = weight.shape[2] > input.shape[2] or weight.shape[3] > input.shape[3]
    return input.device.type == "cpu" and training and too_small


class FastDepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose depthwise weight gradient on small CPU maps is ``depthwise_weight_grad``'s; made by
    ``speed_up`` from an existing module (its class swapped: parameters, buffers and state_dict unchanged)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if takes_fast_grad(input, weight):
            return _DepthwiseConv.apply(input, weight, bias, tuple(self.stride), tuple(self.padding))
        return super()._conv_forward(input, weight, bias)


@functools.cache
def _same_classes() -> dict[type, type]:
    """timm's TF-"same" convolution (EfficientNet-Lite0's strided ones pad the input by its size at run
    time) -> its fast counterpart, made once per process; empty without timm."""
    try:
        from timm.layers.conv2d_same import Conv2dSame
        from timm.layers.padding import pad_same
    except ImportError:
        return {}

    class FastDepthwiseConv2dSame(Conv2dSame):
        """timm's ``Conv2dSame``, depthwise, with ``FastDepthwiseConv2d``'s weight gradient."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if takes_fast_grad(x, self.weight):
                stride = tuple(self.stride)
                padded = pad_same(x, self.kernel_size, stride)
                return _DepthwiseConv.apply(padded, self.weight, self.bias, stride, (0, 0))
            return super().forward(x)

    return {Conv2dSame: FastDepthwiseConv2dSame}


def eligible(module: nn.Module) -> type | None:
    """The fast class for ``module``: a plain ``nn.Conv2d`` or timm's ``Conv2dSame`` (not other subclasses,
    whose forward may differ) that is depthwise, undilated and zero-padded by a fixed amount; else None."""
    fast = FastDepthwiseConv2d if type(module) is nn.Conv2d else _same_classes().get(type(module))
    ok = (
        fast is not None
        and module.groups == module.in_channels == module.out_channels
        and module.weight.shape[1] == 1
        and tuple(module.dilation) == (1, 1)
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )
    return fast if ok else None


def speed_up(model: nn.Module, device: torch.device) -> int:
    """Give ``model``'s eligible depthwise convolutions the fast weight gradient when ``device`` is a CPU;
    returns how many were changed (0 on CUDA, or for models without depthwise convolutions)."""
    if device.type != "cpu":
        return 0
    changed = 0
    for module in model.modules():
        fast = eligible(module)
        if fast is not None:
            module.__class__ = fast
            changed += 1
    return changed
