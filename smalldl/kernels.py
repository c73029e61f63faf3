"""Faster CPU kernels for the convolutions of small feature maps: the weight gradient of depthwise
convolutions whose kernel is larger than their map, and 1 x 1 convolutions of maps of a few pixels as
matrix products.

PyTorch's CPU kernel for the weight gradient of a depthwise convolution (``groups == in_channels ==
out_channels``) is pathologically slow when the kernel is larger than the feature map, so that most of each
window is padding: for EfficientNet-Lite0's last blocks at the demo's 48 px (1152 channels, 5 x 5 kernels on
2 x 2 maps, batch 16) it takes 10-20 ms, 30-50 times the layer's forward pass, and these few layers took
about 40% of a whole training step. The gradient itself is small: for each of the k x k kernel offsets it is
one product of two ``batch x channels x H x W`` tensors summed over batch and space.
``depthwise_weight_grad`` computes it that way, 5-15x faster on those layers; on maps as large as the
kernel or larger PyTorch's kernel is fine and is kept (``takes_fast_grad``). ``benchmarks/depthwise_grad.py``
measures both, layer by layer, and a whole training step without and with this (1.7x at 48 px).

A 1 x 1 convolution (stride 1, no padding, no groups) is a matrix product of the ``(batch * H * W) x C_in``
pixels by the ``C_in x C_out`` weight, and in channels_last the pixels already lie in memory as that matrix.
On maps of a few pixels, PyTorch's CPU convolution (oneDNN) spends most of its time around the arithmetic:
for EfficientNet-Lite0's last blocks at 48 px (192 <-> 1152 channels on 2 x 2 maps, batch 16) forward +
backward took 3-10 ms against 1.5-4.6 ms as ``torch.mm``, and these layers took about a quarter of a training
step. ``pointwise_by_matmul`` takes that path where the map has at most ``MATMUL_MAX_PIXELS`` pixels (beyond
about 6 x 6 the two are even: ``benchmarks/depthwise_grad.py`` measures both).

Both are a demo-speed device, off by default (``train.cpu_kernels: off``, the paper's protocol: PyTorch's
kernels throughout); ``apply`` gives them to a model only where ``cpu_kernels`` is ``on``. Where on, they
must never make a training step slower, so both act only where they were measured to win
(``benchmarks/depthwise_grad.py --matrix``, EfficientNet-Lite0 at 48 and 56 px, a whole step with and
without them): channels_last inputs at one torch thread (1.2-1.3x). On contiguous inputs the depthwise
gradient made a step 0.7-0.95x as fast; at 2 threads the whole step ranged from 0.92x to 1.38x on this
shared 2-core machine (below 1 when other processes held a core, as when the demo runs two jobs at a time),
so both keep PyTorch's kernels there (``eligible_input``).

``speed_up(model, device)`` gives a model's eligible convolutions these kernels on the CPU (class swap):
depthwise ones (plain ``nn.Conv2d`` and timm's TF-"same" ``Conv2dSame``, undilated, zero padding) the weight
gradient above, with PyTorch's forward and input gradient; pointwise ones (plain ``nn.Conv2d``) the matrix
product on small channels_last maps. The parameters and ``state_dict`` are untouched, CUDA runs are not
affected. Results differ from the native ones only by float rounding (summation order): tests check the
outputs and gradients against PyTorch's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
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


def eligible_input(input: torch.Tensor) -> bool:
    """Where the kernels were measured to make a whole training step faster (module docstring): a CPU
    tensor laid out channels_last, at one torch thread."""
    return (
        input.device.type == "cpu"
        and input.dim() == 4
        and input.is_contiguous(memory_format=torch.channels_last)
        and torch.get_num_threads() == 1
    )


def takes_fast_grad(input: torch.Tensor, weight: torch.Tensor) -> bool:
    """Training, an ``eligible_input``, and the kernel is larger than the (unpadded) input map, so that
    most of each window is padding: where PyTorch's weight gradient is slow (``benchmarks/depthwise_grad.py``:
    5-15x slower than ``depthwise_weight_grad`` there, and up to 10x faster where the map is as large as
    the kernel or larger)."""
    training = weight.requires_grad and torch.is_grad_enabled()
    too_small = weight.shape[2] > input.shape[2] or weight.shape[3] > input.shape[3]
    return training and too_small and eligible_input(input)


class FastDepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose depthwise weight gradient on small CPU maps is ``depthwise_weight_grad``'s; made by
    ``speed_up`` from an existing module (its class swapped: parameters, buffers and state_dict unchanged)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if takes_fast_grad(input, weight):
            return _DepthwiseConv.apply(input, weight, bias, tuple(self.stride), tuple(self.padding))
        return super()._conv_forward(input, weight, bias)


#: 1 x 1 convolutions of maps of at most this many pixels run as a matrix product on the CPU (4 x 4: the
#: product was 1.2-3.5x faster up to there, about even with oneDNN's convolution at 6 x 6 to 8 x 8)
MATMUL_MAX_PIXELS = 16


def pointwise_by_matmul(input: torch.Tensor) -> bool:
    """An ``eligible_input`` (channels_last: its pixels are then the rows of a matrix without a copy) of at
    most ``MATMUL_MAX_PIXELS`` pixels."""
    return eligible_input(input) and input.shape[2] * input.shape[3] <= MATMUL_MAX_PIXELS


def pointwise_conv(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1 x 1 convolution (stride 1, no padding) of a channels_last ``input`` as one matrix product: the
    ``(B * H * W) x C_in`` pixels times the transposed ``C_out x C_in`` weight; the result is channels_last,
    as PyTorch's convolution of a channels_last input. Autograd differentiates it as matrix products."""
    b, c, h, w = input.shape
    pixels = input.permute(0, 2, 3, 1).reshape(b * h * w, c)  # a view: channels_last memory is B x H x W x C
    weight = weight.reshape(weight.shape[0], c)
    out = torch.addmm(bias, pixels, weight.t()) if bias is not None else pixels @ weight.t()
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


class FastPointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (1 x 1, stride 1, no padding, no groups) computed as ``pointwise_conv``'s matrix product on
    small channels_last CPU maps; made by ``speed_up`` from an existing module (its class swapped)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if pointwise_by_matmul(input):
            return pointwise_conv(input, weight, bias)
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
    whose forward may differ) that is depthwise, undilated and zero-padded by a fixed amount, or a plain
    ``nn.Conv2d`` that is pointwise (1 x 1, stride 1, no padding, no groups); else None."""
    if type(module) is nn.Conv2d and _pointwise(module):
        return FastPointwiseConv2d
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


def _pointwise(module: nn.Conv2d) -> bool:
    return (
        tuple(module.kernel_size) == (1, 1)
        and tuple(module.stride) == (1, 1)
        and module.groups == 1
        and not isinstance(module.padding, str)
        and tuple(module.padding) == (0, 0)
        and tuple(module.dilation) == (1, 1)
    )


def enabled(settings: Mapping[str, Any], device: torch.device) -> bool:
    """``train.cpu_kernels: on`` (default off) and a CPU."""
    return settings.get("cpu_kernels", "off") == "on" and device.type == "cpu"


def apply(model: nn.Module, settings: Mapping[str, Any], device: torch.device) -> int:
    """``speed_up(model, device)`` where ``enabled``; else nothing (0): PyTorch's kernels throughout."""
    return speed_up(model, device) if enabled(settings, device) else 0


def speed_up(model: nn.Module, device: torch.device) -> int:
    """Give ``model``'s eligible depthwise convolutions the fast weight gradient and its pointwise ones the
    matrix product when ``device`` is a CPU; returns how many were changed (0 on CUDA, or for models with
    neither)."""
    if device.type != "cpu":
        return 0
    changed = 0
    for module in model.modules():
        fast = eligible(module)
        if fast is not None:
            module.__class__ = fast
            changed += 1
    return changed
