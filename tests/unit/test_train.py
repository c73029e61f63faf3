import math

import numpy as np
import pytest
import torch

from smalldl import models, train
from smalldl.errors import InputError

SETTINGS = {
    "epochs": 4,
    "batch_size": 8,
    "max_lr": 0.01,
    "optimizer": "adam",
    "weight_decay": 0.0,
    "crop": 20,
    "flip": True,
    "rotate": 10.0,
    "device": "cpu",
}


def blobs(n, seed):
    """A learnable toy problem: positives carry a bright square somewhere in the image."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, 24, 24), dtype=np.uint8)
    y = np.zeros((n, 1), dtype=np.float32)
    y[: n // 2] = 1
    for i in range(n // 2):
        r, c = rng.integers(4, 14, size=2)
        images[i, r : r + 6, c : c + 6] = 220
    perm = rng.permutation(n)
    return train.Data(images[perm], y[perm], [f"i{k}" for k in perm])


def test_batches_partition_and_never_leave_a_single_image():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 17, 33):
        batches = train.make_batches(n, 8, rng)
        assert sorted(np.concatenate(batches).tolist()) == list(range(n))
        assert n == 1 or min(len(b) for b in batches) > 1
        assert len(batches) == train.steps_per_epoch(n, 8)


def test_augment_shapes_and_randomness():
    x = torch.rand(6, 1, 24, 24)
    gen = torch.Generator().manual_seed(0)
    a = train.augment(x, 20, True, 10.0, gen)
    b = train.augment(x, 20, True, 10.0, gen)
    assert a.shape == (6, 1, 20, 20) and not torch.equal(a, b)
    plain = train.augment(x, 24, False, 0.0, gen)
    assert torch.equal(plain, x)


def test_fit_learns_selects_best_val_epoch_and_is_reproducible():
    data, val = blobs(64, 0), blobs(32, 1)

    def run():
        torch.manual_seed(3)
        model = models.build("smallcnn", 1)
        result = train.fit(model, data, val, SETTINGS, "binary", ["y"], seed=3)
        return model, result

    model, result = run()
    epochs = [r for r in result["history"] if r["kind"] == "epoch"]
    best = min(epochs, key=lambda r: r["val_loss"])
    assert result["best_epoch"] == best["epoch"]
    # the model returned holds the selected epoch's weights, not the last epoch's
    again = train.evaluate(model, val, SETTINGS["crop"], torch.device("cpu"), "binary", ["y"])
    assert again["loss"] == pytest.approx(best["val_loss"], abs=1e-6)
    assert result["val_auc"] > 0.8
    steps = [r for r in result["history"] if r["kind"] == "step"]
    assert len(steps) == SETTINGS["epochs"] * train.steps_per_epoch(64, 8) == result["steps"]
    lrs = [r["lr"] for r in steps]
    assert lrs[0] == pytest.approx(SETTINGS["max_lr"] / 25) and max(lrs) == pytest.approx(SETTINGS["max_lr"], rel=1e-3)
    assert steps[0]["momentum"] == pytest.approx(0.95)  # Adam's beta1 follows the one-cycle momentum
    _, result2 = run()
    assert [r["train_loss"] for r in result2["history"] if r["kind"] == "step"] == [r["train_loss"] for r in steps]


def test_evaluate_multilabel_skips_undefined_labels():
    val = blobs(16, 2)
    val.targets = np.concatenate([val.targets, np.zeros_like(val.targets)], axis=1)
    model = models.build("smallcnn", 2)
    scores = train.evaluate(model, val, 20, torch.device("cpu"), "multilabel", ["a", "b"])
    assert math.isnan(scores["per_label"]["b"]) and not math.isnan(scores["auc"])
    assert scores["auc"] == scores["per_label"]["a"]


@pytest.mark.parametrize("arch", ["smallcnn", "resnet18"])
def test_models_take_grey_images_and_have_a_new_head(arch):
    model = models.build(arch, 3)
    out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 3)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 3


def test_source_checkpoint_round_trip_transfers_body_not_head(tmp_path):
    torch.manual_seed(0)
    src = models.build("smallcnn", 5)
    models.save_source(src, tmp_path / "s.pt", {"val_auc": 0.9})
    ckpt = torch.load(tmp_path / "s.pt", weights_only=True)
    assert ckpt["arch"] == "smallcnn" and "head.weight" not in ckpt["body"]
    torch.manual_seed(1)
    dst = models.build("smallcnn", 1)
    head_before = dst.head.weight.clone()
    meta = models.load_source(dst, tmp_path / "s.pt")
    assert meta == {"val_auc": 0.9}
    for (k, a), b in zip(src.body.state_dict().items(), dst.body.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert torch.equal(dst.head.weight, head_before)
    with pytest.raises(InputError, match="is a 'smallcnn', not a 'resnet18'"):
        models.load_source(models.build("resnet18", 1), tmp_path / "s.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt cannot be read"):
        models.load_source(dst, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="unknown architecture 'resnet9000'"):
        models.build("resnet9000", 1)


def test_long_epochs_report_progress_within_the_epoch():
    import io

    log = io.StringIO()
    model = models.build("smallcnn", 1)
    train.fit(
        model,
        blobs(32, 0),
        blobs(16, 1),
        {**SETTINGS, "epochs": 1},
        "binary",
        ["y"],
        seed=0,
        log=log,
        progress_every=0.0,
    )
    lines = log.getvalue().splitlines()
    assert [line for line in lines if line.startswith("epoch 1: step ")][-1].startswith("epoch 1: step 4/4, loss ")
    assert lines[-1].startswith("epoch 1/1: train_loss")
