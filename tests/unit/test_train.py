import math

import numpy as np
import pytest
import torch

from smalldl import evaluate as evaluate_mod
from smalldl import models, train
from smalldl.config import train_settings
from smalldl.data.arrays import Data
from smalldl.data.transforms import augment, center_crop, to_tensor, tta_views
from smalldl.errors import InputError
from smalldl.evaluate import evaluate, evaluate_views, predict, predict_views, scores
from smalldl.init import initialise
from smalldl.precision import autocast, use_channels_last

SETTINGS = train_settings(
    {
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
)


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
    return Data(images[perm], y[perm], [f"i{k}" for k in perm])


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
    a = augment(x, 20, True, 10.0, gen)
    b = augment(x, 20, True, 10.0, gen)
    assert a.shape == (6, 1, 20, 20) and not torch.equal(a, b)
    plain = augment(x, 24, False, 0.0, gen)
    assert torch.equal(plain, x)


def test_augment_flip_and_crop_take_exact_windows_of_the_image():
    x = torch.arange(24 * 30, dtype=torch.float32).reshape(1, 1, 24, 30).repeat(64, 1, 1, 1)
    out = augment(x, 20, True, 0.0, torch.Generator().manual_seed(2))
    flipped, tops_lefts = 0, set()
    for i in range(64):
        hits = [
            (t, l_, f)
            for t in range(5)
            for l_ in range(11)
            for f in (False, True)
            if torch.allclose(
                out[i, 0],
                x[i, 0, t : t + 20, l_ : l_ + 20].flip(-1) if f else x[i, 0, t : t + 20, l_ : l_ + 20],
                atol=1e-3,
            )
        ]
        assert len(hits) == 1, i
        flipped += hits[0][2]
        tops_lefts.add(hits[0][:2])
    assert 20 < flipped < 44 and len(tops_lefts) > 20  # p = 0.5 flips, crops all over the image


def test_augment_rotates_within_the_range_about_the_crop_centre():
    size = 41
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    line = ((yy - size // 2).abs() <= 1).float()[None, None].repeat(200, 1, 1, 1)  # a horizontal bar
    out = augment(line, size, False, 10.0, torch.Generator().manual_seed(0))
    angles = []
    for img in out[:, 0]:
        w = img.clamp(min=0)
        cy, cx = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
        assert abs(cy - size // 2) < 0.5 and abs(cx - size // 2) < 0.5  # rotated about the centre
        cov_xy = (w * (xx - cx) * (yy - cy)).sum() / w.sum()
        cov_xx = (w * (xx - cx) ** 2).sum() / w.sum()
        cov_yy = (w * (yy - cy) ** 2).sum() / w.sum()
        angles.append(float(0.5 * torch.atan2(2 * cov_xy, cov_xx - cov_yy)) * 180 / math.pi)
    angles = np.abs(angles)
    assert angles.max() <= 10.5 and angles.max() > 8 and np.median(angles) > 3  # uniform in +-10 degrees


def test_fit_learns_selects_best_val_epoch_and_is_reproducible():
    data, val = blobs(64, 0), blobs(32, 1)

    def run():
        torch.manual_seed(3)
        model = models.build("smallcnn", 1)
        result = train.fit(model, data, val, SETTINGS, train.Run(task_type="binary", labels=["y"], seed=3))
        return model, result

    model, result = run()
    epochs = [r for r in result["history"] if r["kind"] == "epoch"]
    best = min(epochs, key=lambda r: r["val_loss"])
    assert result["best_epoch"] == best["epoch"]
    # the model returned holds the selected epoch's weights, not the last epoch's
    again = evaluate(model, val, SETTINGS, device=torch.device("cpu"), task_type="binary", labels=["y"])
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
    scores = evaluate(model, val, SETTINGS, device=torch.device("cpu"), task_type="multilabel", labels=["a", "b"])
    assert math.isnan(scores["per_label"]["b"]) and not math.isnan(scores["auc"])
    assert scores["auc"] == scores["per_label"]["a"]


@pytest.mark.parametrize("arch", ["smallcnn", "resnet18"])
def test_models_take_grey_images_and_have_a_new_head(arch):
    model = models.build(arch, 3)
    out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 3)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 3


def load_source(model, path):
    """A source checkpoint's body into ``model``, as a fine-tuning run with init 'transfer' loads it."""
    body, meta = models.read_source(path, model.arch)
    initialise(model, "transfer", body, seed=0)
    return meta


def test_source_checkpoint_round_trip_transfers_body_not_head(tmp_path):
    torch.manual_seed(0)
    src = models.build("smallcnn", 5)
    models.save_source(tmp_path / "s.pt", arch=src.arch, body=src.body.state_dict(), meta={"val_auc": 0.9})
    ckpt = torch.load(tmp_path / "s.pt", weights_only=True)
    assert ckpt["arch"] == "smallcnn" and "head.weight" not in ckpt["body"]
    torch.manual_seed(1)
    dst = models.build("smallcnn", 1)
    head_before = dst.head.weight.clone()
    meta = load_source(dst, tmp_path / "s.pt")
    assert meta == {"val_auc": 0.9}
    for (k, a), b in zip(src.body.state_dict().items(), dst.body.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert torch.equal(dst.head.weight, head_before)
    with pytest.raises(InputError, match="is a 'smallcnn', not a 'resnet18'"):
        load_source(models.build("resnet18", 1), tmp_path / "s.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt cannot be read"):
        load_source(dst, tmp_path / "bad.pt")
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
        train.Run(task_type="binary", labels=["y"], seed=0),
        train.Hooks(log=log, progress_every=0.0),
    )
    lines = log.getvalue().splitlines()
    assert [line for line in lines if line.startswith("epoch 1: step ")][-1].startswith("epoch 1: step 4/4, loss ")
    assert lines[-1].startswith("epoch 1/1: train_loss")


def test_tta_includes_the_original_view_and_four_different_augmented_views():
    x = torch.rand(3, 1, 24, 24)
    gen = torch.Generator().manual_seed(0)
    views = tta_views(x, 20, True, 10.0, 4, gen)
    assert len(views) == 5
    assert torch.equal(views[0], center_crop(x, 20))  # the original (the authors' code left it out)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not torch.equal(views[i], views[j]), (i, j)


def test_tta_prediction_is_the_mean_over_the_original_and_the_views():
    data = blobs(10, 0)
    torch.manual_seed(0)
    model = models.build("smallcnn", 1).eval()
    dev = torch.device("cpu")
    plain = predict(model, data, SETTINGS, device=dev, task_type="binary")
    tta = predict(model, data, SETTINGS, device=dev, task_type="binary", tta=4, seed=7)
    assert not np.allclose(plain, tta)
    x = to_tensor(data.images, dev)
    views = tta_views(x, 20, True, 10.0, 4, torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = torch.stack([model(v).sigmoid() for v in views]).mean(0).numpy()
        original = model(views[0]).sigmoid().numpy()
    assert np.allclose(tta, expected, atol=1e-6)
    assert np.allclose(plain, original, atol=1e-6)
    assert np.allclose(predict(model, data, SETTINGS, device=dev, task_type="binary", tta=4, seed=7), tta)  # seeded


def test_the_returned_weights_are_the_selected_epochs_not_the_last():
    """Validation labels flipped: the validation loss is lowest early and the last epoch is worse."""
    data, val = blobs(48, 0), blobs(16, 1)
    val.targets = 1 - val.targets
    states = {}
    model = models.build("smallcnn", 1)

    def on_epoch(epoch, m):
        states[epoch] = {k: v.clone() for k, v in m.state_dict().items()}

    result = train.fit(
        model, data, val, SETTINGS, train.Run(task_type="binary", labels=["y"], seed=0), train.Hooks(on_epoch=on_epoch)
    )
    epochs = [r for r in result["history"] if r["kind"] == "epoch"]
    best = min(epochs, key=lambda r: r["val_loss"])["epoch"]
    assert result["best_epoch"] == best != SETTINGS["epochs"]
    final = model.state_dict()
    assert all(torch.equal(final[k], states[best][k]) for k in final)
    assert not all(torch.equal(final[k], states[SETTINGS["epochs"]][k]) for k in final)
    assert result["selected_state_sha256"] == train.state_sha256(states[best])
    assert result["selected_state_sha256"] != train.state_sha256(states[SETTINGS["epochs"]])


def test_checkpoint_resume_ends_exactly_like_an_uninterrupted_run(tmp_path):
    data, val = blobs(40, 0), blobs(16, 1)

    def run(checkpoint=None, stop_after=None):
        torch.manual_seed(0)
        model = models.build("smallcnn", 1)

        def on_epoch(epoch, m):
            if stop_after is not None and epoch == stop_after:
                raise KeyboardInterrupt

        result = train.fit(
            model,
            data,
            val,
            SETTINGS,
            train.Run(task_type="binary", labels=["y"], seed=0, checkpoint=checkpoint, signature="s1"),
            train.Hooks(on_epoch=on_epoch),
        )
        return result

    straight = run()
    ckpt = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        run(ckpt, stop_after=3)  # killed after epoch 3's checkpoint... (on_epoch runs before the save)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 2
    resumed = run(ckpt)
    assert resumed["selected_state_sha256"] == straight["selected_state_sha256"]
    assert [r.get("train_loss") for r in resumed["history"]] == [r.get("train_loss") for r in straight["history"]]
    # a checkpoint of other settings is ignored, not resumed
    torch.save({**saved, "signature": "other"}, ckpt)
    again = run(ckpt)
    assert again["selected_state_sha256"] == straight["selected_state_sha256"]


def test_auc_equals_scikit_learns_including_ties():
    from sklearn.metrics import roc_auc_score

    from smalldl.metrics import roc_auc_score as ours

    rng = np.random.default_rng(0)
    for i in range(100):
        n = int(rng.integers(2, 200))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            continue
        s = rng.integers(0, 4, n) if i % 2 else rng.random(n)  # many ties / none
        assert ours(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError):
        ours([1, 1], [0.2, 0.3])


def test_a_training_job_does_not_import_scikit_learn():
    import subprocess
    import sys

    code = "import sys, smalldl.jobs, smalldl.train, smalldl.models, smalldl.init; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_masked_bce_leaves_uncertain_labels_out_of_loss_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    target = torch.randint(0, 2, (6, 3)).float()
    plain = torch.nn.BCEWithLogitsLoss()(logits, target)
    assert torch.allclose(train.MaskedBCEWithLogitsLoss()(logits, target), plain)  # nothing masked: the same
    target[[0, 2, 5], 1] = -1
    target[3, 0] = -1
    loss = train.MaskedBCEWithLogitsLoss()(logits, target)
    known = target >= 0
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], target[known])
    assert torch.allclose(loss, want)
    loss.backward()
    assert (logits.grad[~known] == 0).all() and (logits.grad[known] != 0).all()
    # the loss of probabilities (validation) and the AUC skip the same entries
    from smalldl.metrics import auc_per_label, masked_bce

    prob = logits.detach().sigmoid().numpy()
    y = target.numpy()
    assert masked_bce(y, prob) == pytest.approx(float(want.detach()), rel=1e-5)
    per = auc_per_label(y, prob, ["a", "b", "c"])
    from smalldl.metrics import roc_auc_score

    for j, name in enumerate("abc"):
        k = y[:, j] >= 0
        if 0 < y[k, j].sum() < k.sum():
            assert per[name] == roc_auc_score(y[k, j], prob[k, j])
        else:
            assert math.isnan(per[name])


def test_fit_never_learns_from_a_label_uncertain_in_every_training_image():
    """Label b is -1 (uncertain) for every image: its head row gets no gradient at all, so it keeps its
    initial weights bit for bit, while label a's row learns. Plain BCE would train it towards -1."""
    data, val = blobs(32, 0), blobs(16, 1)
    for d in (data, val):
        d.targets = np.concatenate([d.targets, -np.ones_like(d.targets)], axis=1)
    assert train.has_masked_labels(data, "multilabel") and not train.has_masked_labels(blobs(8, 0), "binary")
    torch.manual_seed(0)
    model = models.build("smallcnn", 2)
    head0 = {k: v.clone() for k, v in model.head.state_dict().items()}
    result = train.fit(
        model, data, val, {**SETTINGS, "epochs": 2}, train.Run(task_type="multilabel", labels=["a", "b"], seed=0)
    )
    head = model.head.state_dict()
    assert torch.equal(head["weight"][1], head0["weight"][1]) and torch.equal(head["bias"][1], head0["bias"][1])
    assert not torch.equal(head["weight"][0], head0["weight"][0])
    steps = [r for r in result["history"] if r["kind"] == "step"]
    assert all(r["train_loss"] >= 0 for r in steps)
    assert math.isnan(result["val_per_label"]["b"]) and result["val_auc"] == result["val_per_label"]["a"]
    assert math.isfinite(result["val_loss"])


@pytest.mark.parametrize(("amp", "bf16"), [("off", False), ("bf16", True)])
def test_evaluation_takes_amp_from_the_settings(monkeypatch, amp, bf16):
    """predict and evaluate enter bf16 autocast exactly when the settings say so (a caller that
    evaluated without settings once ran the test set in the default precision whatever ``amp`` said)."""
    entered, dtypes = [], []
    real_autocast = torch.autocast

    def spy(device_type, *args, **kwargs):
        entered.append(kwargs.get("enabled", True))
        return real_autocast(device_type, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    settings = train_settings({**SETTINGS, "amp": amp})
    torch.manual_seed(0)
    model = models.build("smallcnn", 1)
    model.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    data, dev = blobs(10, 0), torch.device("cpu")
    prob = predict(model, data, settings, device=dev, task_type="binary", tta=2, seed=1)
    sc = evaluate(model, data, settings, device=dev, task_type="binary", labels=["y"])
    assert prob.shape == (10, 1) and np.isfinite(prob).all() and math.isfinite(sc["loss"])
    assert entered and all(e == bf16 for e in entered)
    assert dtypes and set(dtypes) == {torch.bfloat16 if bf16 else torch.float32}


# ------------------------------------------------------------------------- one evaluation pass (issue 14)


def two_pass_predict(model, data, settings, *, device, task_type, tta=0, seed=0, batch_size=128):
    """The reference: ``predict`` as it was before the single pass (kept verbatim): batches of 128, the TTA
    views drawn batch by batch (``tta_views``), the plain prediction a pass of its own (tta = 0)."""
    crop, flip, rotate = settings["crop"], settings["flip"], settings["rotate"]
    with torch.no_grad():
        model.eval()
        fmt = torch.channels_last if use_channels_last(settings, device) else torch.contiguous_format
        gen = torch.Generator().manual_seed(int(seed))
        out = []
        for i in range(0, len(data), batch_size):
            x = to_tensor(data.images[i : i + batch_size], device)
            views = tta_views(x, crop, flip, rotate, tta, gen)
            with autocast(settings, device):
                probs = [model(v.contiguous(memory_format=fmt)).float() for v in views]
                prob = torch.stack([p.softmax(1) if task_type == "multiclass" else p.sigmoid() for p in probs])
            out.append(prob.mean(0).cpu())
        return torch.cat(out).numpy()


@pytest.mark.parametrize("task_type", ["binary", "multiclass"])
def test_one_pass_predicts_what_the_two_passes_did(task_type):
    """The plain and the TTA predictions of one pass are those of the two passes before it: bit for bit
    at the old batch size (128), and whatever the evaluation batch size, since the TTA views are drawn per
    block of 128 images. 300 images: three draw blocks, the last one short. (Another batch size can move a
    probability by a few float32 ulps on architectures whose kernels depend on the batch, measured <= 4e-7
    for EfficientNet-Lite0 and 1.2e-7 for DenseNet121 on a CPU; the small CNN here is exact, hence
    atol 1e-7.)"""
    data, dev = blobs(300, 3), torch.device("cpu")
    if task_type == "multiclass":
        data = Data(data.images, data.targets[:, 0].astype(np.int64), data.image_ids)
    labels = ["y"] if task_type == "binary" else ["c"]
    torch.manual_seed(0)
    model = models.build("smallcnn", 1 if task_type == "binary" else 3)
    old_plain = two_pass_predict(model, data, SETTINGS, device=dev, task_type=task_type)
    old_tta = two_pass_predict(model, data, SETTINGS, device=dev, task_type=task_type, tta=4, seed=7)
    assert not np.array_equal(old_plain, old_tta)
    plain, mean = predict_views(model, data, SETTINGS, device=dev, task_type=task_type, tta=4, seed=7, batch_size=128)
    assert np.array_equal(plain, old_plain) and np.array_equal(mean, old_tta)
    for batch_size in (None, 50, 300):  # None: eval_batch_size's auto (4 x 8 on a CPU)
        plain, mean = predict_views(
            model, data, SETTINGS, device=dev, task_type=task_type, tta=4, seed=7, batch_size=batch_size
        )
        np.testing.assert_allclose(plain, old_plain, rtol=0, atol=1e-7)
        np.testing.assert_allclose(mean, old_tta, rtol=0, atol=1e-7)
    plain_sc, tta_sc = evaluate_views(
        model, data, SETTINGS, device=dev, task_type=task_type, labels=labels, tta=4, seed=7
    )
    assert plain_sc["auc"] == scores(old_plain, data, task_type=task_type, labels=labels)["auc"]
    assert tta_sc["auc"] == scores(old_tta, data, task_type=task_type, labels=labels)["auc"]
    assert plain_sc["loss"] == pytest.approx(scores(old_plain, data, task_type=task_type, labels=labels)["loss"])
    no_tta = evaluate_views(model, data, SETTINGS, device=dev, task_type=task_type, labels=labels, tta=0)
    assert no_tta[1] is None and no_tta[0]["auc"] == plain_sc["auc"]


def test_one_pass_runs_the_model_once_per_view():
    """The test set's forward passes drop from 1 (plain) + 1 + views (TTA) to 1 + views: the plain
    prediction is the TTA's original view."""
    data, dev, views = blobs(150, 4), torch.device("cpu"), 4
    torch.manual_seed(0)
    model = models.build("smallcnn", 1)
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    two_pass_predict(model, data, SETTINGS, device=dev, task_type="binary")
    two_pass_predict(model, data, SETTINGS, device=dev, task_type="binary", tta=views, seed=1)
    assert sum(seen) == (1 + 1 + views) * len(data)
    seen.clear()
    evaluate_views(model, data, SETTINGS, device=dev, task_type="binary", labels=["y"], tta=views, seed=1)
    assert sum(seen) == (1 + views) * len(data)
    assert seen == [32] * (1 + views) * 4 + [150 - 4 * 32] * (1 + views)  # auto: 4 x batch_size 8 on a CPU


def test_a_known_centre_crop_is_not_computed_again_and_gives_the_same_floats():
    """The job's validation TTA pass takes its centre crop from fit (the selected epoch's validation, same
    weights and batches): one forward pass fewer per batch, the same arrays bit for bit as computing it."""
    data, val, dev, views = blobs(40, 0), blobs(70, 1), torch.device("cpu"), 4
    torch.manual_seed(0)
    model = models.build("smallcnn", 1)
    result = train.fit(model, data, val, SETTINGS, train.Run(task_type="binary", labels=["y"], seed=0))
    known = result["val_prob"]
    plain, mean = predict_views(model, val, SETTINGS, device=dev, task_type="binary", tta=views, seed=3)
    assert np.array_equal(known, plain)  # fit's validation of the selected epoch: the selected weights'
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    again, again_mean = predict_views(
        model, val, SETTINGS, device=dev, task_type="binary", tta=views, seed=3, plain=known
    )
    assert np.array_equal(again, plain) and np.array_equal(again_mean, mean)
    assert sum(seen) == views * len(val)
    seen.clear()
    only = evaluate_views(model, val, SETTINGS, device=dev, task_type="binary", labels=["y"], tta=0, plain=known)
    assert seen == [] and only[1] is None and np.array_equal(only[0]["prob"], plain)


def test_eval_batch_size_setting_and_auto():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert evaluate_mod.eval_batch_size(train_settings({"batch_size": 16}), cpu) == 64
    assert evaluate_mod.eval_batch_size(train_settings({"batch_size": 16}), cuda) == 256
    assert evaluate_mod.eval_batch_size(train_settings({"batch_size": 256}), cuda) == 512
    assert evaluate_mod.eval_batch_size(train_settings({"batch_size": 1024}), cuda) == 1024
    assert evaluate_mod.eval_batch_size(train_settings({"batch_size": 16, "eval_batch_size": 7}), cuda) == 7
    with pytest.raises(InputError):
        train_settings({"eval_batch_size": 0})
