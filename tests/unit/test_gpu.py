"""The trainer's GPU path (bf16 autocast, channels_last). Runs on CUDA when present; on a CPU-only
machine it runs the same code with bf16 autocast on the CPU, so the test never skips."""

import os

import numpy as np
import pytest
import torch

from smalldl import evaluate, models, precision, train
from smalldl.config import train_settings

from .test_train import blobs

DEVICE = torch.device(os.environ.get("SMALLDL_TEST_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))


@pytest.mark.parametrize("transfer", ["finetune", "gradual", "extractor"])
def test_bf16_channels_last_training_learns_and_selects(transfer):
    settings = train_settings(
        {"epochs": 4, "batch_size": 8, "max_lr": 0.01, "crop": 20, "device": DEVICE.type, "amp": "bf16",
         "channels_last": "on"}
    )  # fmt: skip
    assert precision.use_bf16(settings, DEVICE) and precision.use_channels_last(settings, DEVICE)
    torch.manual_seed(0)
    model = models.build("smallcnn", 1).to(DEVICE)
    data, val = blobs(64, 0), blobs(32, 1)
    result = train.fit(
        model, data, val, settings, train.Run(task_type="binary", labels=["y"], seed=0, transfer=transfer)
    )
    assert next(model.parameters()).device.type == DEVICE.type
    epochs = [r for r in result["history"] if r["kind"] == "epoch"]
    assert result["best_epoch"] == min(epochs, key=lambda r: r["val_loss"])["epoch"]
    prob = evaluate.predict(model, val, settings, device=DEVICE, task_type="binary", tta=4)
    assert prob.shape == (32, 1) and np.isfinite(prob).all()
    if transfer != "extractor":
        assert result["val_auc"] > 0.8


def test_auto_settings_pick_bf16_and_channels_last_only_on_cuda_and_fused_kernels_where_torch_has_them():
    s = train_settings({})
    assert precision.use_bf16(s, torch.device("cuda")) and precision.use_channels_last(s, torch.device("cuda"))
    assert not precision.use_bf16(s, torch.device("cpu")) and not precision.use_channels_last(s, torch.device("cpu"))
    assert train.use_fused(s, torch.device("cuda")) and train.use_fused(s, torch.device("cpu"))
    assert not train.use_fused(s, torch.device("mps")) and not train.use_fused(train_settings({"fused": "off"}), None)
    assert precision.use_bf16(train_settings({"amp": "bf16"}), torch.device("cpu"))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fused_optimizer_trains_like_the_per_group_one(optimizer):
    """Fused kernels (the CUDA default) follow the schedule's lr and momentum per layer group like the
    default implementation: the same run ends with the same weights up to rounding."""
    states = {}
    for fused in ("on", "off"):
        settings = train_settings(
            {"epochs": 2, "batch_size": 8, "max_lr": 0.01, "crop": 20, "device": DEVICE.type, "amp": "off",
             "fused": fused, "optimizer": optimizer, "checkpoint": False, "frozen_bn": "fixed"}
        )  # fmt: skip  # frozen_bn fixed: batch statistics of frozen groups would amplify rounding (adapt)
        seen = []
        torch.manual_seed(0)
        model = models.build("smallcnn", 1).to(DEVICE)
        train.fit(
            model,
            blobs(32, 0),
            blobs(16, 1),
            settings,
            train.Run(task_type="binary", labels=["y"], seed=0, transfer="gradual"),
            train.Hooks(on_step=lambda i, m, opt, seen=seen: seen.append(opt.defaults.get("fused"))),
        )
        assert seen and all(bool(f) == (fused == "on") for f in seen)
        states[fused] = {k: v.float().cpu() for k, v in model.state_dict().items()}
    for k, v in states["on"].items():
        torch.testing.assert_close(v, states["off"][k], rtol=1e-4, atol=1e-5, msg=k)
