"""The precision and memory format of training and evaluation: ``train.amp`` and ``train.channels_last``,
where ``auto``, resolved by a fixed device rule, so that one config runs the same arithmetic on every machine
of a device type (no timing race, nothing cached per host):

- CPU: fp32 and the contiguous layout (PyTorch's defaults, what the paper's code ran);
- CUDA: bf16 autocast where the GPU supports it (``torch.cuda.is_bf16_supported``: Ampere and later), else
  fp32; channels_last (tensor cores want NHWC; README, Performance: bf16 + channels_last was the fastest
  on the GPUs measured).

``bf16`` / ``off`` / ``on`` are kept as written. ``train.cpu_kernels`` (``smalldl.kernels``) goes into the
record too. Measuring which format is fastest on a machine is an explicit, separate step:
``benchmarks/formats.py`` times a few training steps of each candidate (``time_steps``) and prints the
settings to write into the config.
"""

from __future__ import annotations

import contextlib
import copy
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

#: A candidate within this fraction of the fastest step counts as fast as it (timing noise): the earliest
#: such candidate is the benchmark's choice (fp32 before bf16, contiguous before channels_last).
MARGIN = 0.05


@dataclass(frozen=True)
class Format:
    """One candidate: the ``amp`` ("off" or "bf16") and ``channels_last`` ("off" or "on") settings."""

    amp: str
    channels_last: str

    @property
    def name(self) -> str:
        return ("bf16" if self.amp == "bf16" else "fp32") + ("+channels_last" if self.channels_last == "on" else "")


def bf16_supported(device: torch.device) -> bool:
    """bf16 arithmetic in hardware: CUDA's check, or oneDNN's on a CPU (AVX-512 BF16 / AMX)."""
    import torch

    try:
        if device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported())
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def candidates(settings: Mapping[str, Any], device: torch.device) -> list[Format]:
    """The formats ``settings`` leave open, in order of preference on a tie."""
    amp, cl = settings.get("amp", "auto"), settings.get("channels_last", "auto")
    amps = ["off", "bf16"] if amp == "auto" and bf16_supported(device) else ["off"] if amp == "auto" else [amp]
    layouts = ["off", "on"] if cl == "auto" else [cl]
    return [Format(a, c) for a in amps for c in layouts]


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name."""
    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def time_steps(
    model: nn.Module,
    fmt: Format,
    *,
    device: torch.device,
    crop: int,
    batch_size: int,
    steps: int = 3,
    warmup: int = 1,
    cpu_kernels: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds per training step (forward and backward on ``batch_size`` random images of ``crop`` x
    ``crop``) of a copy of ``model`` in format ``fmt``: the fastest of ``steps`` after ``warmup``; with
    ``cpu_kernels``, ``kernels.speed_up`` applied to the copy as fit applies it (``train.cpu_kernels: on``)."""
    import torch

    from smalldl import kernels

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    memory_format = torch.channels_last if fmt.channels_last == "on" else torch.contiguous_format
    x = torch.rand(batch_size, 1, crop, crop, generator=torch.Generator().manual_seed(0)).to(device)
    x = x.contiguous(memory_format=memory_format)
    best = float("inf")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        trial = copy.deepcopy(model).to(device=device, memory_format=memory_format).train()
        if cpu_kernels:
            kernels.speed_up(trial, device)  # as fit trains it
        for k in range(warmup + steps):
            sync(device)
            t0 = clock()
            trial.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fmt.amp == "bf16"):
                out = trial(x)
            out.float().mean().backward()
            sync(device)
            if k >= warmup:
                best = min(best, clock() - t0)
        del trial
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return best


def fastest_of(options: list[Format], step_s: Mapping[str, float]) -> Format:
    """The first of ``options`` within ``MARGIN`` of the fastest step: a later candidate (bf16, which
    costs precision; channels_last) must beat the earlier ones by more than timing noise."""
    best = min(step_s[f.name] for f in options)
    return next(f for f in options if step_s[f.name] <= best * (1 + MARGIN))


def resolve(settings: Mapping[str, Any], device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """``settings`` with ``amp`` and ``channels_last`` explicit (an ``auto`` by the device rule above), and
    the record of the choice: ``amp``, ``channels_last``, ``cpu_kernels`` ("on" only where the kernels
    apply: set on and a CPU), ``chosen_by`` ("settings": nothing was auto; "device rule") and ``machine``."""
    amp, cl = settings.get("amp", "auto"), settings.get("channels_last", "auto")
    cuda = device.type == "cuda"
    if amp == "auto":
        amp = "bf16" if cuda and bf16_supported(device) else "off"
    if cl == "auto":
        cl = "on" if cuda else "off"
    auto = "auto" in (settings.get("amp", "auto"), settings.get("channels_last", "auto"))
    kernels = "on" if settings.get("cpu_kernels", "off") == "on" and device.type == "cpu" else "off"
    record = {
        "amp": amp,
        "channels_last": cl,
        "cpu_kernels": kernels,
        "chosen_by": "device rule" if auto else "settings",
        "machine": machine_name(device),
    }
    return {**settings, "amp": amp, "channels_last": cl}, record
