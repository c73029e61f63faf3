"""Cache throughput, in one run: building the cache against a plain single-threaded PIL loop, and reading
the cache against decoding the PNGs.

    python benchmarks/cache_throughput.py                 # 240 radiograph-sized PNGs, width 250, 2 workers
    python benchmarks/cache_throughput.py --images 500 --workers 8

Targets: build >= 1.5x the plain loop on 2 cores; read >= 20x PNG decoding. The images are
1024x1024 8-bit greyscale PNGs like ChestX-ray14's (smooth anatomy-like structure plus noise, so that they
compress like radiographs); writing them is not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smalldl.data import cache  # noqa: E402


def make_images(folder: Path, n: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(n):
        a, b = rng.uniform(2, 6, 2)
        body = 0.5 + 0.3 * np.sin(a * np.pi * x + i) * np.cos(b * np.pi * y) - 0.4 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
        img = np.clip(body * 255 + rng.normal(0, 6, (size, size)), 0, 255).astype(np.uint8)
        p = folder / f"{i:05d}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
    return paths


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--size", type=int, default=1024, help="side of the square test PNGs")
    ap.add_argument("--width", type=int, default=250, help="cache width (paper: 250)")
    ap.add_argument("--workers", type=int, default=2, help="decode processes of the cache build")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions; the best of each counts")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"writing {args.images} PNGs of {args.size}x{args.size} (not timed) ...", flush=True)
        paths = make_images(folder, args.images, args.size)
        mb = sum(os.path.getsize(p) for p in paths) / 2**20
        w = h = args.width

        index = pd.DataFrame({"image_id": [f"i{k}" for k in range(len(paths))], "path": paths})
        npy, meta = folder / "c.npy", folder / "c.json"
        plain = built = read = decode = 0.0
        for rep in range(args.repeat):  # interleaved, best of each: fair on a machine others use too
            t0 = time.perf_counter()
            for p in paths:  # the reference: a plain single-threaded PIL decode + resize loop
                np.asarray(Image.open(p).convert("L").resize((w, h), Image.Resampling.BILINEAR))
            plain = max(plain, rate(len(paths), time.perf_counter() - t0))

            npy.unlink(missing_ok=True)
            t0 = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):  # the build's progress lines
                cache.build_cache(index, npy, meta, width=w, aspect=None, workers=args.workers, chunk=16)
            built = max(built, rate(len(paths), time.perf_counter() - t0))

            arr, _info = cache.open_cache(npy, meta)
            order = np.random.default_rng(rep).permutation(len(paths))
            t0 = time.perf_counter()
            reps = 20
            for _ in range(reps):
                for i in order:
                    np.array(arr[i])
            read = max(read, rate(reps * len(paths), time.perf_counter() - t0))
            del arr
            t0 = time.perf_counter()
            for p in paths:
                Image.open(p).load()
            decode = max(decode, rate(len(paths), time.perf_counter() - t0))

    build_ratio, read_ratio = built / plain, read / decode
    print(f"\n{args.images} PNGs, {mb:.0f} MiB, {args.size}px -> width {args.width}; {os.cpu_count()} CPUs visible")
    print(f"{'':34s}{'images/s':>12s}")
    print(f"{'plain PIL decode+resize (1 thread)':34s}{plain:12.1f}")
    print(f"{f'cache build ({args.workers} workers)':34s}{built:12.1f}   x{build_ratio:.2f} (target >= 1.5)")
    print(f"{'PNG decode (1 thread)':34s}{decode:12.1f}")
    print(f"{'cache read (memmap, random order)':34s}{read:12.1f}   x{read_ratio:.0f} (target >= 20)")
    ok = build_ratio >= 1.5 and read_ratio >= 20
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
