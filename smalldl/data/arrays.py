"""The images and targets of one part of a split, in memory: what training (``smalldl.train``), prediction
and evaluation (``smalldl.evaluate``) take. ``smalldl.jobs._shared.cached_data`` builds one from the
preprocessing cache."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Data:
    """Images (uint8, N x H x W) and targets: float N x L (binary/multilabel) or int N (multiclass)."""

    images: np.ndarray
    targets: np.ndarray
    image_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)
