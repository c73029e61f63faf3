"""The CPU kernels of smalldl.kernels against PyTorch's, per layer shape of EfficientNet-Lite0 at the demo's
crop: the depthwise weight gradient on small maps, and the 1 x 1 convolutions (forward + backward) as matrix
products; then one whole training step (forward + backward + fused AdamW) of the model without
``kernels.speed_up``, with its depthwise gradient only, and with both, alternated step by step (medians).

With ``--matrix``, instead: a whole training step without and with ``kernels.speed_up`` (as
``train.cpu_kernels: on`` applies it, eligibility rule included) at 1 and 2 threads, contiguous and
channels_last, per crop; the rule must never make a step slower (ratio without / with >= 1, or about 1 where
no layer takes the kernels).

    python benchmarks/depthwise_grad.py                 # crop 48 (the demo), batch 16, 1 thread
    python benchmarks/depthwise_grad.py --crop 64 --threads 2
    python benchmarks/depthwise_grad.py --matrix --crops 48 56
"""

import argparse
import copy
import functools
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def best_ms(fn, repeats: int = 5, number: int = 5) -> float:
    for _ in range(2):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number * 1e3)
    return best


def alternated_steps(nets: dict, x, y, rounds: int) -> dict[str, list[float]]:
    """Milliseconds of each training step (forward + backward + fused AdamW) of each model in ``nets``, one
    step of each in turn, the order reversed every round: a noisy machine moves neighbouring steps together,
    so the median of the per-round ratios is steadier than best-of timings."""
    import torch
    import torch.nn.functional as F

    from smalldl.train import make_optimizer

    settings = {"optimizer": "adam", "max_lr": 1e-3, "weight_decay": 1e-4, "fused": "auto"}
    opts = {name: make_optimizer([list(m.parameters())], settings, torch.device("cpu")) for name, m in nets.items()}

    def step(model, opt):
        opt.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()

    for name in nets:
        for _ in range(2):  # warm-up
            step(nets[name], opts[name])
    times = {name: [] for name in nets}
    for r in range(rounds):
        for name in list(nets) if r % 2 == 0 else list(nets)[::-1]:
            t0 = time.perf_counter()
            step(nets[name], opts[name])
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def _took(taken: list, module, inputs, output) -> None:
    if type(module).__name__.startswith("Fast"):
        kind = type(output.grad_fn).__name__ if output.grad_fn is not None else ""
        taken.append(kind in ("_DepthwiseConvBackward", "PermuteBackward0"))


def matrix(crops: list[int], batch: int, rounds: int) -> int:
    """A training step of EfficientNet-Lite0 without and with ``kernels.speed_up`` per crop, thread count
    and layout; prints one table row each (medians, and the median of the per-round ratios)."""
    import torch

    from smalldl import kernels, models

    print(f"EfficientNet-Lite0, batch {batch}, a training step, median of {rounds} alternated rounds")
    head = [("crop", 4), ("threads", 7), ("layout", 13), ("layers", 6), ("without ms", 10), ("with ms", 8)]
    print(" ".join(f"{h:>{w}}" for h, w in head) + f" {'without/with':>12}")
    for crop in crops:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
                torch.manual_seed(0)
                plain = models.build("efficientnet_lite0", 1).to(memory_format=fmt).train()
                fast = copy.deepcopy(plain)
                kernels.speed_up(fast, torch.device("cpu"))
                x = torch.rand(batch, 1, crop, crop).contiguous(memory_format=fmt)
                y = torch.randint(0, 2, (batch, 1)).float()
                taken = []  # per fast layer: whether it took the kernels in this layout (the eligibility rule)
                hooks = [m.register_forward_hook(functools.partial(_took, taken)) for m in fast.modules()]
                fast(x)
                for h in hooks:
                    h.remove()
                times = alternated_steps({"without": plain, "with": fast}, x, y, rounds)
                med = {k: statistics.median(v) for k, v in times.items()}
                ratio = statistics.median(a / b for a, b in zip(times["without"], times["with"], strict=True))
                print(
                    f"{crop:>4} {threads:>7} {layout:>13} {sum(taken):>6} {med['without']:>10.1f} {med['with']:>8.1f}"
                    f" {ratio:>12.2f}",
                    flush=True,
                )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=60, help="alternated rounds of the whole-step comparison")
    ap.add_argument("--matrix", action="store_true", help="whole steps: threads 1, 2 x contiguous, channels_last")
    ap.add_argument("--crops", type=int, nargs="+", default=[48, 56], help="the crops of --matrix")
    args = ap.parse_args(argv)
    if args.matrix:
        return matrix(args.crops, args.batch, args.rounds)

    import torch
    import torch.nn.functional as F

    from smalldl import kernels, models

    torch.set_num_threads(args.threads)
    cl = torch.channels_last
    plain = models.build("efficientnet_lite0", 1).to(memory_format=cl).train()
    fast = copy.deepcopy(plain)
    kernels.speed_up(fast, torch.device("cpu"))
    depthwise_only = copy.deepcopy(fast)
    for m in depthwise_only.modules():
        if type(m) is kernels.FastPointwiseConv2d:
            m.__class__ = torch.nn.Conv2d

    # the shapes of the layers speed_up changed, as the model sees them at this crop, in forward order
    seen_shapes = []

    def record(module, inputs, output):
        seen_shapes.append((module, tuple(inputs[0].shape), tuple(output.shape)))

    hooks = [m.register_forward_hook(record) for m in fast.modules() if type(m).__name__.startswith("Fast")]
    with torch.no_grad():
        fast(torch.rand(args.batch, 1, args.crop, args.crop).contiguous(memory_format=cl))
    for h in hooks:
        h.remove()
    shapes = [s for s in seen_shapes if type(s[0]).__name__.startswith("FastDepthwise")]
    pointwise = [s for s in seen_shapes if type(s[0]) is kernels.FastPointwiseConv2d]

    print(f"EfficientNet-Lite0, crop {args.crop}, batch {args.batch}, {args.threads} thread(s), channels_last")
    head = [("channels", 8), ("map in", 7), ("map out", 7), ("kernel", 6), ("stride", 6)]
    head += [("native ms", 10), ("ours ms", 8)]
    print(" ".join(f"{h:>{w}}" for h, w in head) + f" {'ratio':>6}")
    for module, shape_in, shape_out in shapes:
        c, k, s = shape_in[1], module.kernel_size, module.stride
        pad = (0, 0) if module.padding == (0, 0) or isinstance(module.padding, str) else module.padding
        x = torch.randn(shape_in).contiguous(memory_format=cl)
        go = torch.randn(shape_out).contiguous(memory_format=cl)
        if type(module).__name__ == "FastDepthwiseConv2dSame":
            from timm.layers.padding import pad_same

            x = pad_same(x, k, s)
        w = module.weight.detach()
        native = best_ms(
            lambda x=x, go=go, w=w, s=s, pad=pad, c=c: torch.ops.aten.convolution_backward(
                go, x, w, None, list(s), list(pad), [1, 1], False, [0, 0], c, [False, True, False]
            )
        )
        small = kernels.takes_fast_grad(torch.empty(shape_in), module.weight)  # the decision training makes
        ours = best_ms(lambda x=x, go=go, k=k, s=s, pad=pad: kernels.depthwise_weight_grad(x, go, k, s, pad))
        mark = "" if small else "  (native kept: map >= kernel)"
        print(
            f"{c:>8} {shape_in[2]:>5}^2 {shape_out[2]:>5}^2 {k[0]:>4}x{k[1]} {s[0]:>6} {native:>10.2f} {ours:>8.2f}"
            f" {native / ours:>6.1f}{mark}"
        )

    print(f"1 x 1 convolutions, forward + backward (input and weight gradients), up to {kernels.MATMUL_MAX_PIXELS} px")
    head = [("in", 6), ("out", 6), ("map", 7), ("native ms", 10), ("matmul ms", 10)]
    print(" ".join(f"{h:>{w}}" for h, w in head) + f" {'ratio':>6}")
    seen = set()
    for module, shape_in, _ in pointwise:
        key = (shape_in, module.out_channels)
        if key in seen or shape_in[2] * shape_in[3] > 4 * kernels.MATMUL_MAX_PIXELS:
            continue
        seen.add(key)
        x = torch.randn(shape_in).contiguous(memory_format=cl).requires_grad_()
        w = module.weight.detach().clone().requires_grad_()
        go = torch.randn(F.conv2d(x, w).shape).contiguous(memory_format=cl)

        def fwd_bwd(conv, x=x, w=w, go=go):
            x.grad = w.grad = None
            conv(x, w).backward(go)

        native = best_ms(lambda: fwd_bwd(F.conv2d))
        ours = best_ms(lambda: fwd_bwd(functools.partial(kernels.pointwise_conv, bias=None)))
        small = kernels.pointwise_by_matmul(x)  # the decision the layer makes
        mark = "" if small else "  (native kept: map too large)"
        print(
            f"{shape_in[1]:>6} {module.out_channels:>6} {shape_in[2]:>5}^2 {native:>10.2f} {ours:>10.2f}"
            f" {native / ours:>6.1f}{mark}"
        )

    x = torch.rand(args.batch, 1, args.crop, args.crop).contiguous(memory_format=cl)
    y = torch.randint(0, 2, (args.batch, 1)).float()
    times = alternated_steps({"plain": plain, "depthwise": depthwise_only, "fast": fast}, x, y, args.rounds)
    med = {name: statistics.median(v) for name, v in times.items()}

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    print(
        f"training step, median of {args.rounds} alternated rounds: without speed_up {med['plain']:.1f} ms "
        f"({1e3 * args.batch / med['plain']:.0f} img/s), depthwise gradient only {med['depthwise']:.1f} ms, with "
        f"both {med['fast']:.1f} ms ({1e3 * args.batch / med['fast']:.0f} img/s); per-round ratios: without / "
        f"depthwise only {ratio('plain', 'depthwise'):.2f}x, depthwise only / both {ratio('depthwise', 'fast'):.2f}x, "
        f"without / both {ratio('plain', 'fast'):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
