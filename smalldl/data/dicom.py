"""DICOM radiographs to 8-bit grey images: modality LUT, window (or full range), MONOCHROME1 inverted.

Steps, as a DICOM viewer displays the image:

1. the modality LUT (Rescale Slope/Intercept, or a Modality LUT Sequence);
2. the first VOI window (Window Center/Width, DICOM PS3.3 C.11.2.1.2 linear function) mapped to 0..255;
   a VOI LUT Sequence is applied instead when present; without either the image's min..max is used;
3. MONOCHROME1 (minimum = white) is inverted so that every image is "bright = dense".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from smalldl.data.tiles import map_to_uint8, minmax_to_uint8
from smalldl.errors import InputError

SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: str | Path) -> bool:
    """By suffix, or by the ``DICM`` magic at byte 128 (files without a suffix)."""
    path = Path(path)
    if path.suffix.lower() in SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read(path: str | Path, pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise InputError(f"image {path} does not exist") from None
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"DICOM {path} cannot be read ({type(exc).__name__}: {exc})") from None


def dicom_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header only."""
    ds = _read(path, pixels=False)
    try:
        return int(ds.Columns), int(ds.Rows)
    except AttributeError:
        raise InputError(f"DICOM {path} has no Rows/Columns: not an image") from None


def _first(value) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def window_to_uint8(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """The DICOM linear VOI function (PS3.3 C.11.2.1.2.1) with output range 0..255."""
    width = max(width, 1.0)
    lo = center - 0.5 - (width - 1) / 2
    hi = center - 0.5 + (width - 1) / 2
    y = ((x - (center - 0.5)) / (width - 1 if width > 1 else 1) + 0.5) * 255.0
    y = np.where(x <= lo, 0.0, np.where(x > hi, 255.0, y))
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def read_dicom(path: str | Path, check_size: Callable[[int, int], None] | None = None) -> np.ndarray:
    """A DICOM file as a 2-D uint8 image (see the module docstring); InputError naming the file if not.

    ``check_size(width, height)`` runs on the header before the pixel data is decoded (the cache's
    ``max_pixels`` and ``min_side``). The LUTs and the window are applied to bands of rows
    (:mod:`smalldl.data.tiles`): the worker holds the decoded pixels and the uint8 result, not float64
    copies of the image.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = _read(path, pixels=True)
    if "PixelData" not in ds:
        raise InputError(f"DICOM {path} has no pixel data: not an image")
    if check_size is not None:
        try:
            check_size(int(ds.Columns), int(ds.Rows))
        except AttributeError:
            raise InputError(f"DICOM {path} has no Rows/Columns: not an image") from None
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for broken or unsupported pixel data
        raise InputError(f"DICOM {path}: pixel data cannot be decoded ({type(exc).__name__}: {exc})") from None
    del ds.PixelData  # the encoded bytes, as large again as the decoded image (which owns its memory)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    height, width = arr.shape[:2]
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if not (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
            raise InputError(f"DICOM {path}: photometric interpretation {photometric} is not supported")
        weights = np.array([0.299, 0.587, 0.114])
        return minmax_to_uint8(height, width, lambda rows: arr[rows, :, :3].astype(np.float64) @ weights)
    if arr.ndim != 2:
        raise InputError(f"DICOM {path}: pixel array of shape {arr.shape} is not a 2-D image")

    def modality(rows: slice) -> np.ndarray:
        return np.asarray(apply_modality_lut(arr[rows], ds), dtype=np.float64)

    if "VOILUTSequence" in ds:
        out = minmax_to_uint8(
            height, width, lambda rows: np.asarray(apply_voi_lut(modality(rows), ds, prefer_lut=True), np.float64)
        )
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, window = _first(ds.WindowCenter), _first(ds.WindowWidth)
        out = map_to_uint8(height, width, modality, lambda x: window_to_uint8(x, center, window))
    else:
        out = minmax_to_uint8(height, width, modality)
    if photometric == "MONOCHROME1":
        np.subtract(255, out, out=out)
    return out


__all__ = ["dicom_size", "is_dicom", "read_dicom", "window_to_uint8"]
