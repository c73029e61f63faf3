"""Radiomics feature extraction throughput, in one run: images/s of both feature sets (paper79, pyradiomics),
each by a plain single-threaded loop and by smalldl.radiomics.extract over --workers processes, and the
ratio parallel / single.

    python benchmarks/radiomics_throughput.py                       # 120 images 250x250 (the paper's width), 2 workers
    python benchmarks/radiomics_throughput.py --images 400 --workers 8 --width 64

The images are uint8 like the cache's: smooth anatomy-like structure plus noise, so that GLCMs and
pyradiomics' bins are as populated as a radiograph's. Generating them is not timed; the extraction reads
them from a read-only memmap, as the rule does. Both ways must give the same features (checked).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smalldl import radiomics  # noqa: E402


def make_images(n: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:width, 0:width] / width
    out = np.empty((n, width, width), dtype=np.uint8)
    for k in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.4)
        body = 150 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2)))
        ribs = 25 * np.sin(2 * np.pi * (yy * rng.uniform(6, 10) + rng.uniform(0, 1)))
        noise = rng.normal(0, rng.uniform(4, 20), (width, width))
        out[k] = np.clip(40 + body + ribs + noise, 0, 255).astype(np.uint8)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--width", type=int, default=250, help="image side (paper: width 250)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--featuresets", nargs="+", default=list(radiomics.FEATURESETS), choices=radiomics.FEATURESETS)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.npy"
        np.save(path, make_images(args.images, args.width))
        images = np.load(path, mmap_mode="r")
        ids = [f"img{k:05d}" for k in range(len(images))]
        print(
            f"{args.images} images {args.width}x{args.width}, {args.workers} workers, {os.cpu_count()} CPUs",
            flush=True,
        )
        print(f"{'feature set':<12} {'features':>8} {'single img/s':>13} {'parallel img/s':>15} {'ratio':>6}")
        for featureset in args.featuresets:
            radiomics.feature_names(featureset)  # warm up (pyradiomics builds its extractor once)
            t0 = time.perf_counter()
            single = np.stack([radiomics.image_features(img, featureset) for img in images])
            t_single = time.perf_counter() - t0
            t0 = time.perf_counter()
            with open(os.devnull, "w") as devnull:
                stderr, sys.stderr = sys.stderr, devnull  # no progress lines in the table
                try:
                    table = radiomics.extract(images, ids, featureset, workers=args.workers)
                finally:
                    sys.stderr = stderr
            t_parallel = time.perf_counter() - t0
            if not np.allclose(table.iloc[:, 1:].to_numpy(), single, rtol=1e-9, atol=1e-12, equal_nan=False):
                print(f"ERROR: {featureset}: parallel and single-threaded features differ", file=sys.stderr)
                return 1
            rate_single, rate_parallel = len(images) / t_single, len(images) / t_parallel
            print(
                f"{featureset:<12} {single.shape[1]:>8} {rate_single:>13.1f} {rate_parallel:>15.1f} "
                f"{rate_parallel / rate_single:>5.2f}x",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
