"""What a dataset's images may measure, checked on each header before decoding, and what decoding one
costs a cache worker (the cache rule's ``mem_mb``). Light: the DAG imports it (``rules/common.smk``).

- more than ``datasets.<name>.max_pixels`` pixels (default: PIL's decompression-bomb limit, which the
  cache sets from it while PIL opens a file): a bomb, or an image a worker has no memory for;
- a shorter side below ``preprocess.min_side``: a thumbnail or a broken 1x1 file, that resizing to the
  cache width would blow up into a blur and training would take as an image.
"""

from __future__ import annotations

from dataclasses import dataclass

from smalldl.errors import InputError

#: PIL's decompression-bomb limit (89,478,485 pixels), the default of ``datasets.<name>.max_pixels``.
DEFAULT_MAX_PIXELS = 89_478_485  # = PIL's default Image.MAX_IMAGE_PIXELS (1024**3 // 4 // 3)
#: Default of ``preprocess.min_side``: the synthetic datasets' smallest image size.
DEFAULT_MIN_SIDE = 32

#: Peak memory of a decode worker per pixel of the image it decodes, above its interpreter (measured by
#: tests/unit/test_data_io.py: 16-bit PNG/TIFF 3.5, DICOM 5, 8-bit RGB PNG 7 bytes): the decoded image, its
#: uint8 copy and bands of float64 rows, never a float64 copy of the whole image.
WORKER_BYTES_PER_PIXEL = 8
#: A worker's interpreter with numpy, PIL and pydicom (MB), and the parent's with the index (MB).
WORKER_BASE_MB, PARENT_MB = 200, 1000


def job_mem_mb(workers: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The cache rule's ``mem_mb``: the parent plus ``workers`` decoders, each holding at most one image
    of ``max_pixels`` pixels (``datasets.<name>.max_pixels``; the default: ~880 MB a worker)."""
    per_worker = WORKER_BASE_MB + -(-max_pixels * WORKER_BYTES_PER_PIXEL // 2**20)
    return PARENT_MB + max(1, workers) * per_worker


@dataclass(frozen=True)
class ImageLimits:
    """What a dataset's images may measure: ``max_pixels`` (``datasets.<dataset>.max_pixels``) and a
    shorter side of at least ``min_side`` (``preprocess.min_side``), checked on the header."""

    dataset: str = "<name>"
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE

    def check(self, path: str, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise self.too_many_pixels(path, f"{width}x{height} = {width * height:,} pixels")
        if min(width, height) < self.min_side:
            raise InputError(
                f"image {path} is {width}x{height} pixels: its shorter side {min(width, height)} is below "
                f"preprocess.min_side = {self.min_side} (a thumbnail or a broken file would be blown up into a "
                "blur and trained on): remove it from the dataset, or lower preprocess.min_side"
            )

    def too_many_pixels(self, path: str, size: str) -> InputError:
        key = f"datasets.{self.dataset}.max_pixels"
        return InputError(
            f"image {path} is {size}, over the limit of {self.max_pixels:,} ({key}, PIL's guard against "
            f"decompression bombs): raise {key} if the image is genuine, or remove it"
        )


__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MIN_SIDE", "ImageLimits", "job_mem_mb"]
