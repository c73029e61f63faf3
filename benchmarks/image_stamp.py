"""What the check of a public dataset's images costs each DAG build (issue 27: the paper config's DAG build
stays <= 20 s with ChestX-ray14's 112,120 images).

At each DAG build the main Snakemake process compares the images of ChestX-ray14, CheXpert and MURA with
the manifest their index job wrote (smalldl.data.manifest.mark: read the manifest, stat every image in
threads, set the stamp). This creates N small files in a temporary folder, writes their manifest, and times
``mark`` against the reference measured in the same run: one bare ``os.stat`` per file in one thread (what
Snakemake itself would do, at least, with the images as inputs). Prints both, their ratio, and mark's share
of the 20 s budget.

    python benchmarks/image_stamp.py [--images 112120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smalldl.data import manifest  # noqa: E402

BUDGET_S = 20.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=112_120)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = []
        for i in range(args.images):
            folder = root / "images" / f"{i // 10_000:03d}"
            if i % 10_000 == 0:
                folder.mkdir(parents=True)
            path = folder / f"{i:08d}_000.png"
            path.write_bytes(b"\x89PNG" + i.to_bytes(4, "little"))
            paths.append(str(path))
        index = root / "index" / "nih.parquet"
        index.parent.mkdir()
        index.write_bytes(b"x")
        manifest.write_manifest(paths, manifest.manifest_path(index))
        bare, ours = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for p in paths:
                os.stat(p)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            line = manifest.mark(index)
            ours.append(time.perf_counter() - t0)
            assert line is None, line
    b, o = min(bare), min(ours)
    print(f"{args.images} images, best of {args.repeats}:")
    print(f"  bare os.stat loop (reference): {b:.2f} s")
    print(f"  manifest.mark (read manifest, threaded stats, stamp): {o:.2f} s  ratio {o / b:.2f}x the reference")
    print(f"  share of the {BUDGET_S:.0f} s DAG-build budget: {o / BUDGET_S:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
