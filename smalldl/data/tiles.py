"""Wide images (16-bit, 32-bit, float; DICOM through its LUTs) to uint8, a band of rows at a time.

Converting a whole 16-bit image to float64 first costs 8 bytes a pixel per temporary (a 12000 x 12000
radiograph: 1.15 GB each, 3.8 GB at the peak of ``(x - lo) / (hi - lo) * 255``). Here the float64 work
is done on bands of :data:`TILE_PIXELS` pixels written straight into the uint8 output, so a cache worker
holds the decoded image, its uint8 copy and a few MB: the same arithmetic as on the whole image, hence
the same bytes out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

#: Pixels in one band of rows (float64 temporaries of 2 MiB each).
TILE_PIXELS = 1 << 18

#: ``band(rows)``: the image's rows ``rows`` (a slice) as an array, any dtype.
Band = Callable[[slice], np.ndarray]


def row_bands(height: int, width: int, tile_pixels: int = TILE_PIXELS) -> Iterator[slice]:
    """Slices of consecutive rows of about ``tile_pixels`` pixels (at least one row) covering ``height``."""
    step = max(1, tile_pixels // max(1, width))
    for top in range(0, height, step):
        yield slice(top, min(height, top + step))


def minmax_to_uint8(height: int, width: int, band: Band, tile_pixels: int = TILE_PIXELS) -> np.ndarray:
    """``round((x - lo) / (hi - lo) * 255)`` with lo, hi the image's min and max (zeros for a flat image
    or one holding NaN), ``x`` read band by band: two passes, one for lo/hi, one to scale."""
    lows, highs = [], []
    for rows in row_bands(height, width, tile_pixels):
        x = band(rows)
        lows.append(x.min())
        highs.append(x.max())
    lo, hi = float(np.min(lows)), float(np.max(highs))  # NaN propagates, as on the whole image
    out = np.zeros((height, width), dtype=np.uint8)
    if not hi > lo:
        return out
    for rows in row_bands(height, width, tile_pixels):
        x = np.asarray(band(rows), dtype=np.float64)
        out[rows] = np.round((x - lo) / (hi - lo) * 255.0)
    return out


def map_to_uint8(
    height: int, width: int, band: Band, fn: Callable[[np.ndarray], np.ndarray], tile_pixels: int = TILE_PIXELS
) -> np.ndarray:
    """``fn(band(rows))`` (a uint8 band) for every band, into one (height, width) uint8 image."""
    out = np.empty((height, width), dtype=np.uint8)
    for rows in row_bands(height, width, tile_pixels):
        out[rows] = fn(band(rows))
    return out


__all__ = ["TILE_PIXELS", "map_to_uint8", "minmax_to_uint8", "row_bands"]
