"""Decode + resize every image of a dataset once into a uint8 memmap (N, H, W) in index order.

Width W is fixed by config; height H = round(W * aspect) with aspect the most common height/width ratio
of the dataset (the paper's "width 250 keeping the most common aspect ratio"). An image with another
aspect is resized to width W keeping its own aspect and centre-cropped or zero-padded to H.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from smalldl.errors import InputError
from smalldl.utils import Progress, atomic_path, write_json


def _open(path: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise InputError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image {path} cannot be decoded ({exc})") from None
    return img


def to_grey_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL image as a 2-D uint8 array (16-bit and float images are min-max scaled)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return np.round(scaled).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def common_aspect(paths: list[str], decimals: int = 2) -> float:
    """The most common height/width ratio (rounded), read from image headers only."""
    counts: Counter[float] = Counter()
    for p in paths:
        try:
            with Image.open(p) as img:
                w, h = img.size
        except FileNotFoundError:
            raise InputError(f"image {p} does not exist") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"image {p} cannot be decoded ({exc})") from None
        counts[round(h / w, decimals)] += 1
    if not counts:
        raise InputError("cannot build a cache of an empty dataset")
    return counts.most_common(1)[0][0]


def load_resized(path: str, width: int, height: int) -> np.ndarray:
    """Decode one image and resize it to (height, width), aspect kept, centre crop/pad in height."""
    img = _open(path)
    arr = to_grey_uint8(img)
    h0, w0 = arr.shape
    new_h = max(1, round(h0 * width / w0))
    resized = np.asarray(Image.fromarray(arr).resize((width, new_h), Image.Resampling.BILINEAR), dtype=np.uint8)
    if new_h == height:
        return resized
    out = np.zeros((height, width), dtype=np.uint8)
    if new_h > height:
        top = (new_h - height) // 2
        out[:] = resized[top : top + height]
    else:
        top = (height - new_h) // 2
        out[top : top + new_h] = resized
    return out


def _load_chunk(args: tuple[list[str], int, int]) -> np.ndarray:
    paths, width, height = args
    return np.stack([load_resized(p, width, height) for p in paths])


def build_cache(
    index: pd.DataFrame,
    out_npy: str | Path,
    out_meta: str | Path,
    width: int,
    aspect: float | None = None,
    workers: int = 1,
    chunk: int = 64,
) -> dict[str, Any]:
    """Write the memmap ``out_npy`` (uint8, N x H x W, index order) and its metadata JSON."""
    paths = list(index["path"])
    if not paths:
        raise InputError("cannot build a cache of an empty dataset")
    aspect = aspect if aspect is not None else common_aspect(paths)
    height = max(1, round(width * aspect))
    chunks = [(paths[i : i + chunk], width, height) for i in range(0, len(paths), chunk)]
    with atomic_path(out_npy) as tmp:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "|u1", "fortran_order": False, "shape": (len(paths), height, width)}
            )
        mm = np.lib.format.open_memmap(tmp, mode="r+")
        tracker = Progress(len(paths), desc=f"cache {Path(out_npy).parent.name}", unit="img")
        with contextlib.ExitStack() as stack:
            if workers > 1:
                blocks = stack.enter_context(ProcessPoolExecutor(max_workers=workers)).map(_load_chunk, chunks)
            else:
                blocks = map(_load_chunk, chunks)
            done = 0
            for block in blocks:
                mm[done : done + len(block)] = block
                done += len(block)
                tracker.update(len(block))
        tracker.close()
        mm.flush()
        del mm
    meta = {
        "n": len(paths),
        "height": height,
        "width": width,
        "aspect": aspect,
        "image_ids": list(index["image_id"]),
    }
    write_json(out_meta, meta)
    return meta


def open_cache(npy: str | Path, meta: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The cache as a read-only memmap plus its metadata (image_ids in row order)."""
    with open(meta) as fh:
        info = json.load(fh)
    arr = np.load(npy, mmap_mode="r")
    if arr.shape[0] != info["n"]:
        raise InputError(f"cache {npy} has {arr.shape[0]} images but {meta} lists {info['n']}; rebuild it")
    return arr, info


def rows_for(info: dict[str, Any], image_ids: list[str] | pd.Series) -> np.ndarray:
    """Row numbers in the cache for the given image ids (InputError naming an unknown id)."""
    pos = {iid: i for i, iid in enumerate(info["image_ids"])}
    out = np.empty(len(image_ids), dtype=np.int64)
    for k, iid in enumerate(image_ids):
        try:
            out[k] = pos[iid]
        except KeyError:
            raise InputError(f"image_id {iid!r} is not in the cache; rebuild it") from None
    return out


__all__ = ["build_cache", "open_cache", "rows_for", "load_resized", "common_aspect"]
