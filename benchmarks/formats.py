"""Which format trains fastest on this machine: a few timed training steps (forward + backward, random
images) of each candidate, amp off/bf16 (bf16 only where the device supports it) x channels_last off/on, at
an arch, crop and batch size; prints the timings and the settings to write into the config. ``train.amp``
and ``train.channels_last: auto`` never measure (smalldl.formats: a fixed device rule, the same arithmetic
on every machine); this is the explicit measurement. Within 5% of the fastest (timing noise), fp32 and the
contiguous layout are kept.

    python benchmarks/formats.py                                        # the demo: CPU, EfficientNet-Lite0, 48 px
    python benchmarks/formats.py --device cuda --arch densenet121 --crop 236
    python benchmarks/formats.py --cpu-kernels on --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--cpu-kernels", default="off", choices=["on", "off"], help="time with train.cpu_kernels")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)

    import torch

    from smalldl import formats, models

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = models.build(args.arch, 1).to(device)
    options = formats.candidates({"amp": "auto", "channels_last": "auto"}, device)
    step_s = {}
    for fmt in options:
        step_s[fmt.name] = formats.time_steps(
            model, fmt, device=device, crop=args.crop, batch_size=args.batch, steps=args.steps,
            cpu_kernels=args.cpu_kernels == "on",
        )  # fmt: skip
        print(f"{fmt.name:>20}: {step_s[fmt.name] * 1e3:8.1f} ms per step", flush=True)
    best = formats.fastest_of(options, step_s)
    where = f"{formats.machine_name(device)}, {args.arch}, crop {args.crop}, batch {args.batch}"
    print(f"# {where}, {args.threads} thread(s), cpu_kernels {args.cpu_kernels}")
    print(f'train: {{amp: "{best.amp}", channels_last: "{best.channels_last}"}}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
