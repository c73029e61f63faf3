"""The precision and memory format a model runs in, for training and evaluation alike: bf16 autocast
(``train.amp``) and channels_last (``train.channels_last``). ``smalldl.formats`` resolves their ``auto``
by the device rule before a job trains; these functions read the settings as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def use_bf16(settings: Mapping[str, Any], device: torch.device) -> bool:
    """bf16 autocast: ``bf16`` / ``off`` force it. The training jobs resolve ``auto`` by the device rule
    before training (``smalldl.formats.resolve``: bf16 on CUDA where the GPU supports it); an ``auto`` left
    unresolved (a library caller) is on for CUDA, off on a CPU."""
    amp = settings.get("amp", "auto")
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def use_channels_last(settings: Mapping[str, Any], device: torch.device) -> bool:
    """channels_last memory format: ``on`` / ``off`` force it; ``auto`` as ``use_bf16``'s."""
    mode = settings.get("channels_last", "auto")
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def autocast(settings: Mapping[str, Any], device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(settings, device))
