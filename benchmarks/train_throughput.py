"""Training throughput of our trainer against a bare PyTorch loop, and the per-job fixed overhead.

Both train the same model (same init) on the same cached uint8 images with the same augmentation, batch
size and optimizer, and evaluate the same validation set once per epoch; the ratio isolates what our
trainer adds (schedule writes, layer groups, history, checkpoints). Target: ratio >= 0.95.
The overhead is measured in a fresh process: from its start to its first optimizer step (imports,
model build, data). Target: <= 5 s on CPU for the demo model.

    python benchmarks/train_throughput.py                       # CPU, the demo's model and size
    python benchmarks/train_throughput.py --device cuda --arch densenet121 --width 250 --crop 236
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OVERHEAD_SNIPPET = r"""
import os, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from smalldl.jobs import train as train_jobs  # what a finetune job imports
from smalldl.jobs._shared import training_torch
from smalldl import models, train
from smalldl.config import train_settings
from smalldl.data.arrays import Data
s = train_settings({{"epochs": 1, "batch_size": {batch}, "crop": {crop}, "threads": {threads}, "device": {device!r},
                    "checkpoint": False}})
with training_torch(s, {threads}, "benchmark") as (torch, device, _):  # as a training job: a GPU slot held
    rng = np.random.default_rng(0)
    data = Data(rng.integers(0, 255, ({n}, {width}, {width}), dtype=np.uint8),
                      (rng.random(({n}, 1)) < 0.5).astype(np.float32))
    model = models.build({arch!r}, 1).to(device)
    def first(i, m, o):
        print(f"FIRST_STEP {{time.time()}}", flush=True)
        os._exit(0)
    train.fit(model, data, data, s, train.Run(task_type="binary", labels=["y"], seed=0), train.Hooks(on_step=first))
"""


def measure_overhead(args) -> float:
    code = OVERHEAD_SNIPPET.format(
        root=str(ROOT), batch=args.batch, crop=args.crop, threads=args.threads, device=args.device,
        n=args.batch * 2, width=args.width, arch=args.arch,
    )  # fmt: skip
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("FIRST_STEP"))
    return float(line.split()[1]) - t0


def bare_loop(model, data, val, settings, device, epochs):
    """A plain loop: shuffle, augment, forward, backward, AdamW step; validation once per epoch."""
    import numpy as np
    import torch

    from smalldl import evaluate, precision, train
    from smalldl.data.transforms import augment, to_tensor

    opt = torch.optim.AdamW(model.parameters(), lr=settings["max_lr"], weight_decay=settings["weight_decay"])
    crit = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    fmt = torch.channels_last if precision.use_channels_last(settings, device) else torch.contiguous_format
    model.to(memory_format=fmt)
    for _ in range(epochs):
        model.train()
        for idx in train.make_batches(len(data), settings["batch_size"], rng):
            x = augment(to_tensor(data.images[idx], device), settings["crop"], True, 10.0, gen)
            y = torch.from_numpy(data.targets[idx]).to(device)
            opt.zero_grad(set_to_none=True)
            with precision.autocast(settings, device):
                logits = model(x.contiguous(memory_format=fmt))
            crit(logits.float(), y).backward()
            opt.step()
        evaluate.predict(model, val, settings, device=device, task_type="binary")
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--crop", type=int, default=56)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--n", type=int, default=320, help="training images")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    ap.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--cpu-kernels", default="off", choices=["on", "off"], help="train.cpu_kernels (ours only)")
    ap.add_argument("--repeats", type=int, default=4, help="repeats in alternating order; the best of each is kept")
    ap.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    args = ap.parse_args()

    import numpy as np
    import torch

    from smalldl import models, precision, train
    from smalldl.config import train_settings
    from smalldl.data.arrays import Data

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = train_settings(
        {"epochs": args.epochs, "batch_size": args.batch, "crop": args.crop, "device": args.device, "amp": args.amp,
         "checkpoint": True, "max_lr": 1e-3, "channels_last": args.channels_last, "cpu_kernels": args.cpu_kernels}
    )  # fmt: skip
    rng = np.random.default_rng(0)
    data = Data(
        rng.integers(0, 255, (args.n, args.width, args.width), dtype=np.uint8),
        (rng.random((args.n, 1)) < 0.5).astype(np.float32),
    )
    val = Data(data.images[:64], data.targets[:64])
    print(
        f"{args.arch} @ {args.crop}px, batch {args.batch}, {args.n} images x {args.epochs} epochs, {args.device}, "
        f"{args.threads} threads, bf16 {precision.use_bf16(settings, device)}, "
        f"channels_last {precision.use_channels_last(settings, device)}, cpu_kernels {args.cpu_kernels}"
    )

    def run_bare() -> float:
        torch.manual_seed(0)
        model = models.build(args.arch, 1).to(device)
        t0 = time.perf_counter()
        bare_loop(model, data, val, settings, device, args.epochs)
        return args.n * args.epochs / (time.perf_counter() - t0)

    def run_ours(ckpt: str) -> float:
        torch.manual_seed(0)
        model = models.build(args.arch, 1).to(device)
        t0 = time.perf_counter()
        train.fit(
            model,
            data,
            val,
            settings,
            train.Run(task_type="binary", labels=["y"], seed=0, checkpoint=ckpt),
            train.Hooks(log=open(os.devnull, "w")),
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.n * args.epochs / (time.perf_counter() - t0)

    ours_best, bare_best, pair_ratios = 0.0, 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        run_bare()  # warm-up (allocator, cuDNN algorithm choice, clocks): not timed
        for rep in range(args.repeats):
            ckpt = os.path.join(tmp, f"resume{rep}.pt")
            if rep % 2:  # alternate the order so that drifting clocks or load do not favour one side
                ours, bare = run_ours(ckpt), run_bare()
            else:
                bare, ours = run_bare(), run_ours(ckpt)
            print(f"  repeat {rep + 1}: bare loop {bare:8.1f} img/s   our trainer {ours:8.1f} img/s")
            ours_best, bare_best = max(ours_best, ours), max(bare_best, bare)
            pair_ratios.append(ours / bare)
    # The target is judged on the median of the back-to-back pairs' ratios: a burst of load on this shared
    # machine moves both members of a pair, while the best of each side can come from different moments.
    ratio = float(np.median(pair_ratios))
    print(
        f"training: our trainer {ours_best:.1f} img/s, bare loop {bare_best:.1f} img/s (best of each, "
        f"{ours_best / bare_best:.3f}); median ratio of the {len(pair_ratios)} pairs {ratio:.3f} (target >= 0.95)"
    )
    overhead = min(measure_overhead(args) for _ in range(2))
    print(f"per-job fixed overhead (process start -> first optimizer step): {overhead:.2f} s (target <= 5 s on CPU)")
    misses = [f"ratio {ratio:.3f} < 0.95"] if ratio < 0.95 else []
    if args.device == "cpu" and overhead > 5:
        misses.append(f"overhead {overhead:.2f} s > 5 s")
    print("FAIL: " + "; ".join(misses) if misses else "PASS: both targets met")
    if misses and args.check:
        sys.exit(1)


if __name__ == "__main__":
    main()
