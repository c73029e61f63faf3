"""Decode + resize every image of a dataset once into a uint8 memmap (N, H, W) in index order.

Width W is fixed by config; height H = round(W * aspect) with aspect the most common height/width ratio
of the dataset (the paper's "width 250 keeping the most common aspect ratio"). An image with another
aspect is resized to width W keeping its own aspect and centre-cropped or zero-padded to H.

At scale (ChestX-ray14: 112,120 PNGs of 1024x1024) the build

- decodes in parallel: ``workers`` processes each take a chunk of rows, decode, resize and write them
  straight into the memmap (nothing but a row count comes back to the parent);
- streams: at most ``2 * workers`` chunks are in flight, no image is held beyond its chunk;
- resumes: rows go to ``.<name>.partial`` with a ``.<name>.partial.json`` record of the finished
  chunks; a killed build started again with the same index and size continues where it stopped. Bad
  input (a missing or undecodable image) removes both and leaves nothing behind; too little free disk
  for the rows left is one line before decoding (the memmap is sparse: a full disk would be a SIGBUS).

Images: PNG/JPEG/anything PIL reads (16-bit and float min-max scaled, a band of rows at a time:
``smalldl.data.tiles``; JPEGs decoded at a reduced scale when that is still at least W wide) and DICOM
(``smalldl.data.dicom``). Before an image is decoded its header size is checked (``smalldl.data.limits``):
more pixels than ``datasets.<name>.max_pixels`` (PIL's decompression-bomb limit, also set from it) or a
shorter side below ``preprocess.min_side`` (a thumbnail or a corrupt header, that resizing would blow
up into a blur) stops the build naming the file, its size and the key.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import time
import warnings
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from smalldl.data import dicom
from smalldl.data.limits import ImageLimits
from smalldl.data.tiles import minmax_to_uint8
from smalldl.errors import DiskFullError, InputError, damaged
from smalldl.utils import Progress, format_bytes, sample_sha256, write_json

#: Resize first reduces by an integer factor when the image is at least this many times the target
#: (Pillow's ``reducing_gap``): faster for 1024-px radiographs, no effect at factors below 2.
REDUCING_GAP = 2.0


def _bomb(path: str, exc: Exception, limits: ImageLimits) -> InputError:
    """PIL's DecompressionBombError (over twice its limit: Image.open raises it before we see the size)
    as :meth:`ImageLimits.check`'s message, the pixel count read from PIL's message."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return limits.too_many_pixels(path, f"{int(found.group(1)):,} pixels" if found else "too large")


def _pil_open(path: str, limits: ImageLimits) -> Image.Image:
    """Image.open (header only) with the size checked; InputError naming the file for anything wrong.

    PIL's own decompression-bomb limit is ``limits.max_pixels`` while it opens the file (its warning
    from there on, silenced: :meth:`ImageLimits.check` refuses the image by name; its error from twice
    that, raised before the size reaches us, becomes the same message)."""
    default = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = limits.max_pixels
            img = Image.open(path)
    except FileNotFoundError:
        raise InputError(f"image {path} does not exist") from None
    except Image.DecompressionBombError as exc:
        raise _bomb(path, exc, limits) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image {path} cannot be decoded ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = default
    try:
        limits.check(path, *img.size)
    except InputError:
        img.close()
        raise
    return img


def _open(path: str, draft_size: tuple[int, int] | None = None, limits: ImageLimits | None = None) -> Image.Image:
    img = _pil_open(path, limits or ImageLimits())
    try:
        if draft_size is not None and img.format == "JPEG":
            img.draft("L", draft_size)
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image {path} cannot be decoded ({exc})") from None
    return img


#: PIL modes min-max scaled to 8 bits (16-bit, 32-bit integer, float).
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def to_grey_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL image as a 2-D uint8 array (16-bit and float images are min-max scaled, in bands of rows:
    no float64 copy of the whole image)."""
    if img.mode in WIDE_MODES:
        width, height = img.size
        return minmax_to_uint8(height, width, lambda rows: np.asarray(img.crop((0, rows.start, width, rows.stop))))
    return np.asarray(img.convert("L"), dtype=np.uint8)


def image_size(path: str, limits: ImageLimits | None = None) -> tuple[int, int]:
    """(width, height) from the file header (PIL or DICOM), checked against ``limits`` (default: at most
    PIL's limit of pixels, any side); InputError naming the file."""
    limits = limits or ImageLimits(min_side=0)
    if dicom.is_dicom(path):
        size = dicom.dicom_size(path)
        limits.check(path, *size)
        return size
    with _pil_open(path, limits) as img:
        return img.size


def common_aspect(paths: list[str], decimals: int = 2, limits: ImageLimits | None = None) -> float:
    """The most common height/width ratio (rounded), read from image headers only (checked against
    ``limits`` if given)."""
    counts: Counter[float] = Counter()
    tracker = Progress(len(paths), desc="image sizes", unit="img", every=5.0) if len(paths) > 5000 else None
    for p in paths:
        w, h = image_size(p, limits)
        counts[round(h / w, decimals)] += 1
        if tracker is not None:
            tracker.update()
    if not counts:
        raise InputError("cannot build a cache of an empty dataset")
    return counts.most_common(1)[0][0]


def read_grey(path: str, width: int | None = None, limits: ImageLimits | None = None) -> np.ndarray:
    """Decode one image (PIL or DICOM) to a 2-D uint8 array; JPEGs at a reduced scale >= ``width``.
    The header size is checked against ``limits`` (default :class:`ImageLimits`) before decoding."""
    limits = limits or ImageLimits()
    if dicom.is_dicom(path):
        return dicom.read_dicom(path, check_size=lambda w, h: limits.check(path, w, h))
    return to_grey_uint8(_open(path, (width, 1) if width else None, limits))


def load_resized(path: str, width: int, height: int, limits: ImageLimits | None = None) -> np.ndarray:
    """Decode one image and resize it to (height, width), aspect kept, centre crop/pad in height."""
    arr = read_grey(path, width, limits)
    h0, w0 = arr.shape
    new_h = max(1, round(h0 * width / w0))
    resized = np.asarray(
        Image.fromarray(arr).resize((width, new_h), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP),
        dtype=np.uint8,
    )
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


def _fill_chunk(args: tuple[str, int, list[str], int, int, ImageLimits]) -> tuple[int, int]:
    """Worker: decode ``paths`` into rows ``start...`` of the memmap at ``npy``; returns (start, count)."""
    npy, start, paths, width, height, limits = args
    mm = np.load(npy, mmap_mode="r+")
    try:
        for i, p in enumerate(paths):
            mm[start + i] = load_resized(p, width, height, limits)
        mm.flush()
    finally:
        del mm
    return start, len(paths)


def _fingerprint(paths: list[str], ids: list[str], width: int, height: int, chunk: int) -> str:
    h = hashlib.sha256(f"{width}x{height}/{chunk}\n".encode())
    for p, i in zip(paths, ids, strict=True):
        h.update(f"{i}\t{p}\n".encode())
    return h.hexdigest()


def _partial_paths(out_npy: Path) -> tuple[Path, Path]:
    return out_npy.with_name(f".{out_npy.name}.partial"), out_npy.with_name(f".{out_npy.name}.partial.json")


def _start_or_resume(partial: Path, state_path: Path, fingerprint: str, shape: tuple[int, int, int]) -> set[int]:
    """Chunks already written by an earlier, killed build with the same fingerprint (else a fresh file)."""
    if partial.is_file() and state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
            arr = np.load(partial, mmap_mode="r")
            if state.get("fingerprint") == fingerprint and arr.shape == shape and arr.dtype == np.uint8:
                return set(state.get("done", []))
        except (OSError, ValueError):
            pass
    state_path.unlink(missing_ok=True)
    with open(partial, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
        header = fh.tell()
        fh.truncate(header + int(np.prod(shape)))
    return set()


def _check_space(out_npy: Path, needed: int) -> None:
    """The memmap is a sparse file filled as images are decoded: a disk that fills up then kills a worker
    with SIGBUS. Checked up front instead: too little free space is one line, before any decoding."""
    free = shutil.disk_usage(out_npy.parent).free
    if needed > free:
        raise DiskFullError(
            f"cache {out_npy} needs {format_bytes(needed)} more but {format_bytes(free)} is free in "
            f"{out_npy.parent}: free space there (or lower preprocess.width) and run again",
            errno=errno.ENOSPC,
        )


def build_cache(
    index: pd.DataFrame,
    out_npy: str | Path,
    out_meta: str | Path,
    width: int,
    aspect: float | None = None,
    workers: int = 1,
    chunk: int = 64,
    limits: ImageLimits | None = None,
) -> dict[str, Any]:
    """Write the memmap ``out_npy`` (uint8, N x H x W, index order) and its metadata JSON (resumable).

    ``limits``: the images' size limits (default :class:`ImageLimits`), checked on each header."""
    out_npy = Path(out_npy)
    limits = limits or ImageLimits()
    paths = [str(p) for p in index["path"]]
    ids = [str(i) for i in index["image_id"]]
    if not paths:
        raise InputError("cannot build a cache of an empty dataset")
    out_npy.parent.mkdir(parents=True, exist_ok=True)
    partial, state_path = _partial_paths(out_npy)
    fingerprint: str | None = None
    done: set[int] = set()
    try:
        aspect = aspect if aspect is not None else common_aspect(paths, limits=limits)
        height = max(1, round(width * aspect))
        shape = (len(paths), height, width)
        fingerprint = _fingerprint(paths, ids, width, height, chunk)
        done = _start_or_resume(partial, state_path, fingerprint, shape)
        starts = [s for s in range(0, len(paths), chunk) if s not in done]
        _check_space(out_npy, sum(min(chunk, len(paths) - s) for s in starts) * height * width)
        tracker = Progress(len(paths), desc=f"cache {out_npy.parent.name}", unit="img")
        if done:
            resumed = sum(min(chunk, len(paths) - s) for s in done)
            print(
                f"cache {out_npy.parent.name}: resuming, {resumed}/{len(paths)} images already done",
                file=sys.stderr,
                flush=True,
            )
            tracker.count = resumed
        last_save = time.monotonic()

        def finished(start: int, count: int) -> None:
            nonlocal last_save
            done.add(start)
            tracker.update(count)
            if time.monotonic() - last_save >= 2.0:
                last_save = time.monotonic()
                write_json(state_path, {"fingerprint": fingerprint, "done": sorted(done)})

        jobs = ((str(partial), s, paths[s : s + chunk], width, height, limits) for s in starts)
        if workers > 1 and len(starts) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                pending: set[Future] = set()
                for job in jobs:
                    pending.add(pool.submit(_fill_chunk, job))
                    if len(pending) >= 2 * workers:
                        ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in ready:
                            finished(*fut.result())
                for fut in pending:
                    finished(*fut.result())
        else:
            for job in jobs:
                finished(*_fill_chunk(job))
        tracker.close()
    except DiskFullError:
        if done:  # keep the rows written so far for the run after space is freed
            write_json(state_path, {"fingerprint": fingerprint, "done": sorted(done)})
        else:
            partial.unlink(missing_ok=True)
        raise
    except InputError:
        partial.unlink(missing_ok=True)
        state_path.unlink(missing_ok=True)
        raise
    except BaseException:
        # killed or crashed: keep the rows written so far for the next attempt
        if partial.is_file() and fingerprint is not None:
            write_json(state_path, {"fingerprint": fingerprint, "done": sorted(done)})
        raise
    os.replace(partial, out_npy)
    state_path.unlink(missing_ok=True)
    meta = {"n": len(paths), "height": height, "width": width, "aspect": aspect, "image_ids": ids}
    # what a reader checks the memmap against (open_cache): its size and a sample of its bytes
    meta.update(bytes=out_npy.stat().st_size, sample_sha256=sample_sha256(out_npy))
    write_json(out_meta, meta)
    return meta


def open_cache(npy: str | Path, meta: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The cache as a read-only memmap plus its metadata (image_ids in row order), checked against what
    the cache job recorded (shape, size in bytes, a sample hash: ``utils.sample_sha256``); a mismatch is
    one line naming the file and the command that rebuilds it."""
    try:
        with open(meta) as fh:
            info = json.load(fh)
        shape = (int(info["n"]), int(info["height"]), int(info["width"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise damaged(meta, f"not the cache's record: {type(exc).__name__}: {exc}") from None
    size = os.stat(npy).st_size
    if "bytes" in info and size != info["bytes"]:
        raise damaged(npy, f"{size} bytes, {meta} records {info['bytes']} for {shape[0]} images")
    try:
        arr = np.load(npy, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise damaged(npy, f"{type(exc).__name__}: {exc}") from None
    if arr.shape != shape or arr.dtype != np.uint8:
        raise damaged(npy, f"{arr.dtype} {list(arr.shape)}, {meta} records uint8 {list(shape)}")
    if "sample_sha256" in info and sample_sha256(npy) != info["sample_sha256"]:
        raise damaged(npy, f"its bytes differ from those the cache job wrote ({meta})")
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


__all__ = [
    "build_cache",
    "open_cache",
    "rows_for",
    "load_resized",
    "common_aspect",
    "read_grey",
    "image_size",
]
