"""``train.compile``: the ``torch.compile`` wrapper of a model, made once per model and shared by training
and evaluation, and a failure of dynamo / inductor turned into one InputError naming the setting.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from smalldl.errors import InputError

_COMPILED = "_smalldl_compiled"  # a model's torch.compile wrapper, in its __dict__: not a submodule


def compiled(model: nn.Module, settings: Mapping[str, Any]) -> nn.Module:
    """What training steps and evaluation call: ``model`` itself (``compile: off``), or its
    ``torch.compile`` wrapper, made once per model and kept with it, so one run compiles once (dynamo
    recompiles only when a guard changes: train/eval mode, trainable groups, a new batch shape). The
    wrapper shares the model's parameters; state_dicts, checkpoints and digests are taken from the model
    itself, so their keys carry no ``_orig_mod.`` prefix and match an uncompiled run's."""
    if settings.get("compile", "off") == "off":
        return model
    net = model.__dict__.get(_COMPILED)
    if net is not None and getattr(net, "_orig_mod", None) is model:
        return net
    try:
        net = torch.compile(model)
    except Exception as e:  # e.g. dynamo unsupported on this Python / torch
        raise _compile_failure(e) from e
    model.__dict__[_COMPILED] = net  # bypasses nn.Module.__setattr__: no submodule, state_dict unchanged
    return net


def _compile_failure(e: BaseException) -> Exception:
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return InputError(
        f"train.compile: on, but torch.compile failed on this platform ({type(e).__name__}: {first}); "
        "set train.compile: off"
    )


def _is_compile_error(e: BaseException) -> bool:
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError

    return isinstance(e, TorchDynamoException | CppCompileError)


@contextmanager
def compile_errors(settings: Mapping[str, Any]) -> Iterator[None]:
    """Turn a failure of dynamo / inductor (no C++ compiler, an unsupported platform), raised at the first
    call of a compiled model or its first backward, into one InputError naming ``train.compile``."""
    try:
        yield
    except Exception as e:
        if settings.get("compile", "off") != "off" and _is_compile_error(e):
            raise _compile_failure(e) from e
        raise
