"""train.compile: compiled training and evaluation steps (torch.compile once per run) match an uncompiled
run, keep the uncompiled state_dict format, and a platform that cannot compile stops with one InputError."""

import time

import numpy as np
import pytest
import torch

from smalldl import compilation, models, train
from smalldl import evaluate as evaluate_mod
from smalldl.config import train_settings
from smalldl.errors import InputError

from .test_train import blobs  # positives carry a bright square; 24 px images, 20 px crops

BASE = {
    "epochs": 2,
    "batch_size": 8,
    "max_lr": 0.01,
    "weight_decay": 0.0,
    "crop": 20,
    "rotate": 10.0,
    "device": "cpu",
    "amp": "off",
    "channels_last": "off",
    "tta": 0,
}


def _fit(mode, checkpoint=None):
    settings = train_settings({**BASE, "compile": mode})
    torch.manual_seed(0)
    model = models.build("smallcnn", 1)
    run = train.Run(task_type="binary", labels=["y"], seed=0, checkpoint=checkpoint, signature="s")
    # 32 images in batches of 8, 16 validation images in one batch: one shape each for train and eval
    result = train.fit(model, blobs(32, 0), blobs(16, 1), settings, run)
    return model, result


def test_compiled_fit_matches_uncompiled_and_keeps_the_state_format(tmp_path, monkeypatch):
    real, calls = torch.compile, []

    def spy(model, *args, **kwargs):
        calls.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    eager_model, eager = _fit("off")
    assert calls == []
    t0 = time.monotonic()
    ckpt = tmp_path / "resume.pt"
    model, result = _fit("on", checkpoint=ckpt)
    took = time.monotonic() - t0
    assert took < 180, f"compiled 2-epoch run took {took:.0f} s"
    assert len(calls) == 1 and calls[0] is model  # once per run: training steps and evaluation share it
    # metrics within float-rounding of inductor's fused kernels
    assert result["best_epoch"] == eager["best_epoch"]
    assert result["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-3)
    assert result["val_auc"] == pytest.approx(eager["val_auc"], abs=0.02)
    steps = [r["train_loss"] for r in result["history"] if r["kind"] == "step"]
    eager_steps = [r["train_loss"] for r in eager["history"] if r["kind"] == "step"]
    assert steps == pytest.approx(eager_steps, abs=1e-3)
    # the selected state and the checkpoint: the uncompiled module's keys, no _orig_mod. prefix
    state = model.state_dict()
    assert list(state) == list(eager_model.state_dict())
    assert result["selected_state_sha256"] == train.state_sha256(state)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert list(saved["model"]) == list(state)
    assert not any("_orig_mod" in k for k in saved["model"])
    # the compiled evaluation predicts what the uncompiled one does on the same weights
    val = blobs(16, 1)
    dev = torch.device("cpu")
    on = evaluate_mod.predict(model, val, train_settings({**BASE, "compile": "on"}), device=dev, task_type="binary")
    off = evaluate_mod.predict(model, val, train_settings({**BASE, "compile": "off"}), device=dev, task_type="binary")
    np.testing.assert_allclose(on, off, atol=1e-4)
    assert len(calls) == 1  # the model's wrapper is reused


def test_compile_off_calls_the_model_itself(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("torch.compile called with compile: off"))
    model = models.build("smallcnn", 1)
    assert compilation.compiled(model, train_settings({"compile": "off"})) is model
    assert train_settings({})["compile"] == "off"


def test_a_platform_that_cannot_compile_stops_with_an_error_naming_the_setting(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(InputError, match=r"train\.compile.*RuntimeError: Dynamo is not supported"):
        _fit("on")


def test_a_compile_failure_at_the_first_step_stops_with_an_error_naming_the_setting(monkeypatch):
    from torch._inductor.exc import CppCompileError

    class Failing(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, x):
            raise CppCompileError(["g++", "kernel.cpp"], "g++: command not found")

    monkeypatch.setattr(torch, "compile", Failing)
    with pytest.raises(InputError, match=r"train\.compile.*CppCompileError.*set train\.compile: off"):
        _fit("on")
