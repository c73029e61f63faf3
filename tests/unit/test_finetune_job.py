"""The training jobs end to end without Snakemake: lr finder -> fine-tuning with the chosen lr, the
per-run outputs, and proof that the test metrics come from the selected weights of this very run."""

import copy
import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from smalldl import config as cfg
from smalldl import models, schedules, train
from smalldl.data import cache as cache_mod
from smalldl.evaluate import eval_batch_size, predict, scores
from smalldl.jobs import _shared as shared_jobs
from smalldl.jobs import data as data_jobs
from smalldl.jobs import splits as split_jobs
from smalldl.jobs import train as train_jobs
from smalldl.utils import derive_seed

from ..conftest import ROOT
from .test_train import two_pass_predict


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["train"].update({"epochs": 3, "batch_size": 8, "crop": 28, "max_lr": 0.003, "save_model": True})
    # the demo pins its formats and the CPU kernels; these tests take the schema's defaults (the device rule)
    config["train"].update({"amp": "auto", "channels_last": "auto", "cpu_kernels": "off"})
    config["train"]["lr_finder"] = {"enabled": True, "steps": 30, "end_lr": 1.0}
    config["preprocess"] = {"width": 32}
    config["study"].update({"sizes": [20, 40], "seeds": [0, 1], "archs": ["smallcnn"]})
    config.pop("radiomics", None)
    config = cfg.validate(config)
    raw = tmp / "raw"
    params = {"n_patients": 200, "images_per_patient": [1, 2], "image_size": 40, "prevalence": {"Emphysema": 0.3}}
    data_jobs.generate_synthetic(dataset={"kind": "synthetic_chest", "params": params}, out_dir=raw, seed=1, workers=1)
    data_jobs.index(
        dataset_name="synthetic", dataset={"kind": "synthetic_chest"}, raw=raw, out_parquet=tmp / "index.parquet"
    )
    data_jobs.cache(
        index_parquet=tmp / "index.parquet",
        out_npy=tmp / "c.npy",
        out_meta=tmp / "c.json",
        width=32,
        aspect=None,
        workers=1,
    )
    split_jobs.split(
        task_name="emphysema",
        task=config["tasks"]["emphysema"],
        global_seed=config["seed"],
        index_parquet=tmp / "index.parquet",
        excluded_from=[],
        out_split=tmp / "split.parquet",
        out_manifest=tmp / "manifest.json",
    )
    for n in (20, 40):
        for seed in (0, 1):
            split_jobs.subset(
                task_name="emphysema",
                task=config["tasks"]["emphysema"],
                global_seed=config["seed"],
                split_parquet=tmp / "split.parquet",
                n=n,
                seed=seed,
                out_csv=tmp / f"n{n}_s{seed}.csv",
                out_json=tmp / "x.json",
            )
    return tmp, config


def run_job(tmp, config, recipe="onecycle-finetune-none-default", n=20, seed=0, lr_json=None, source=None, tag="a"):
    out = tmp / tag
    out.mkdir(exist_ok=True)
    metrics = train_jobs.finetune(
        task_name="emphysema",
        task=config["tasks"]["emphysema"],
        global_seed=config["seed"],
        settings=config["train"],
        arch="smallcnn",
        recipe_name=recipe,
        n=n,
        seed=seed,
        cache_npy=tmp / "c.npy",
        cache_meta=tmp / "c.json",
        split_parquet=tmp / "split.parquet",
        subset_csv=tmp / f"n{n}_s{seed}.csv",
        source_ckpt=source,
        out_metrics=out / "metrics.json",
        out_predictions=out / "predictions.parquet",
        out_val_predictions=out / "val_predictions.parquet",
        out_history=out / "history.csv",
        lr_json=lr_json,
    )
    return out, metrics


def run_lr_find(tmp, config, n, out):
    """The lr finder job on the prepared data (scratch recipe, subset n, seed 0); writes out/lr.{csv,json,png}."""
    return train_jobs.lr_find(
        task_name="emphysema",
        task=config["tasks"]["emphysema"],
        global_seed=config["seed"],
        settings=config["train"],
        arch="smallcnn",
        recipe_name="onecycle-finetune-none-default",
        cache_npy=tmp / "c.npy",
        cache_meta=tmp / "c.json",
        split_parquet=tmp / "split.parquet",
        subset_csv=tmp / f"n{n}_s0.csv",
        source_ckpt=None,
        out_csv=out / "lr.csv",
        out_json=out / "lr.json",
        out_png=out / "lr.png",
    )


def test_lr_finder_job_writes_the_sweep_and_finetune_uses_its_lr(prepared):
    tmp, config = prepared
    info = run_lr_find(tmp, config, n=40, out=tmp)
    sweep = pd.read_csv(tmp / "lr.csv")
    assert list(sweep.columns) == ["step", "lr", "loss", "smoothed_loss"] and len(sweep) >= 5
    assert info["n"] == 40 and info["rule"] == "minimum"
    assert info["formats"]["chosen_by"] == "device rule"  # the sweep too, in the device rule's formats
    # the lr of the minimal loss (PAPER.md), on a centred average of the raw losses, recorded with the
    # lowest raw and lowest smoothed loss's lrs to check it against
    assert info["lr"] == pytest.approx(sweep["lr"].iloc[int(np.argmin(schedules.centred_losses(sweep["loss"])))])
    assert info["raw_min_lr"] == pytest.approx(sweep.loc[sweep["loss"].idxmin(), "lr"])
    assert info["smoothed_min_lr"] == pytest.approx(sweep.loc[sweep["smoothed_loss"].idxmin(), "lr"])
    assert (tmp / "lr.png").read_bytes()[:4] == b"\x89PNG"
    out, metrics = run_job(tmp, config, lr_json=tmp / "lr.json", tag="finder")
    assert metrics["lr_source"] == "finder" and metrics["max_lr"] == pytest.approx(info["lr"])
    steps = pd.read_csv(out / "history.csv").query("kind == 'step'")
    assert steps["lr"].max() == pytest.approx(info["lr"], rel=1e-3)


def test_run_outputs_and_the_evaluated_weights_are_the_selected_ones_of_this_run(prepared):
    tmp, config = prepared
    out, metrics = run_job(tmp, config, tag="sel")
    for key in (
        "val_auc", "val_auc_tta", "val_auc_per_label", "test_auc", "test_auc_tta", "test_auc_per_label",
        "test_auc_per_label_tta", "selected_epoch", "max_lr", "wall_time_s", "images_per_s", "epochs_run",
    ):  # fmt: skip
        assert metrics[key] is not None, key
    history = pd.read_csv(out / "history.csv")
    steps, epochs = history[history["kind"] == "step"], history[history["kind"] == "epoch"]
    assert len(steps) == metrics["steps"] and len(epochs) == 3
    for col in ("epoch", "step", "lr_group1", "lr_group2", "lr_group3", "momentum", "train_loss", "trainable"):
        assert steps[col].notna().all(), col
    assert epochs["val_loss"].notna().all() and epochs["val_auc"].notna().all()
    assert metrics["selected_epoch"] == int(epochs.loc[epochs["val_loss"].idxmin(), "epoch"])
    # model.pt holds the selected weights; predicting with them reproduces predictions.parquet
    saved = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert train.state_sha256(saved["state"]) == saved["sha256"] == metrics["selected_state_sha256"]
    model = models.build("smallcnn", 1)
    model.load_state_dict(saved["state"])
    split = pd.read_parquet(tmp / "split.parquet")
    arr, info = cache_mod.open_cache(tmp / "c.npy", tmp / "c.json")
    test = shared_jobs.cached_data(arr, info, shared_jobs.selected_rows(split, "test"), config["tasks"]["emphysema"])
    preds = pd.read_parquet(out / "predictions.parquet")
    assert list(preds["image_id"]) == test.image_ids
    # in the device rule's formats (train.amp, channels_last: auto; a CPU: fp32, contiguous), recorded in
    # metrics.json with the CPU kernels (off: the schema's default)
    assert metrics["formats"]["chosen_by"] == "device rule" and "format_step_s" not in metrics
    assert (metrics["formats"]["amp"], metrics["formats"]["channels_last"]) == ("off", "off")
    assert metrics["formats"]["cpu_kernels"] == "off"
    settings = {
        **config["train"],
        "amp": metrics["formats"]["amp"],
        "channels_last": metrics["formats"]["channels_last"],
    }
    plain = predict(model, test, settings, device=torch.device("cpu"), task_type="binary")
    assert np.allclose(plain[:, 0], preds["p_Emphysema"], atol=1e-6)
    assert not np.allclose(preds["p_tta_Emphysema"], preds["p_Emphysema"])
    # ... and not another run's: another seed selects other weights with other predictions
    other_out, other = run_job(tmp, config, seed=1, tag="other")
    assert other["selected_state_sha256"] != metrics["selected_state_sha256"]
    assert not np.allclose(pd.read_parquet(other_out / "predictions.parquet")["p_Emphysema"], preds["p_Emphysema"])


def test_recipes_with_a_source_init_and_transfer_method(prepared):
    tmp, config = prepared
    config = copy.deepcopy(config)
    model = models.build("smallcnn", 13)
    torch.manual_seed(0)
    for p in model.body.parameters():
        p.data.normal_(0.5, 0.01)  # a recognisable 'pretrained' body
    src = tmp / "src.pt"
    models.save_source(src, arch=model.arch, body=model.body.state_dict(), meta={"val_auc": 0.7})
    out, m = run_job(tmp, config, "onecycle-extractor-cxr13-transfer", source=src, tag="ext")
    assert m["init_info"]["loaded"] > 0 and m["source_val_auc"] == 0.7
    hist = pd.read_csv(out / "history.csv", dtype={"trainable": str}).query("kind == 'step'")
    assert set(hist["trainable"]) == {"3"}
    _, m = run_job(tmp, config, "regular-gradual-cxr13-moments", source=src, tag="mom")
    assert m["init_info"]["redrawn"] > 0 and m["schedule"] == "regular" and m["transfer"] == "gradual"
    saved = torch.load(tmp / "mom" / "model.pt", map_location="cpu", weights_only=True)["state"]
    w = saved["body.features.0.weight"]
    assert abs(float(w.mean()) - 0.5) < 0.1  # the moments of the source survive (before training drifts them)


def test_uncertain_labels_are_masked_from_split_to_metrics_and_bootstrap(prepared):
    """CheXpert's ``ignore`` policy writes -1 into the index. A multilabel task keeps those images, counts
    the masked labels in its manifest, trains without them, and scores each label's AUC on the images
    where it is known, in metrics.json and again in the results' bootstrap from predictions.parquet."""
    from smalldl import stats
    from smalldl.metrics import roc_auc_score
    from smalldl.results.intervals import run_scores

    tmp, config = prepared
    raw = copy.deepcopy(config)
    labels = ["Emphysema", "Effusion", "Atelectasis"]
    raw["tasks"]["chest3"] = {"dataset": "synth_chest", "type": "multilabel", "labels": labels,
                              "val_fraction": 0.2, "test_fraction": 0.3}  # fmt: skip
    config = cfg.validate(raw)
    index = pd.read_parquet(tmp / "index.parquet")
    rng = np.random.default_rng(0)
    index.loc[rng.random(len(index)) < 0.3, "Emphysema"] = -1
    index.loc[index.index[:4], labels] = -1  # every label uncertain: the image is left out
    index.attrs.clear()  # a new index, not the index job's one edited: without the record of that one
    index.to_parquet(tmp / "index_unc.parquet")
    split_jobs.split(
        task_name="chest3",
        task=config["tasks"]["chest3"],
        global_seed=config["seed"],
        index_parquet=tmp / "index_unc.parquet",
        excluded_from=[],
        out_split=tmp / "split3.parquet",
        out_manifest=tmp / "m3.json",
    )
    manifest = json.loads((tmp / "m3.json").read_text())
    split = pd.read_parquet(tmp / "split3.parquet")
    assert len(split) == len(index) - 4 and manifest["selection"]["uncertain_dropped_images"] == 4
    masked = int((index["Emphysema"].iloc[4:] == -1).sum())
    assert manifest["selection"]["uncertain_masked"] == {"Emphysema": masked}
    split_jobs.subset(
        task_name="chest3",
        task=config["tasks"]["chest3"],
        global_seed=config["seed"],
        split_parquet=tmp / "split3.parquet",
        n=40,
        seed=0,
        out_csv=tmp / "s3.csv",
        out_json=tmp / "s3.json",
    )
    subset = pd.read_csv(tmp / "s3.csv")
    assert (subset["Emphysema"] == -1).any()
    out = tmp / "unc"
    out.mkdir()
    metrics = train_jobs.finetune(
        task_name="chest3",
        task=config["tasks"]["chest3"],
        global_seed=config["seed"],
        settings=config["train"],
        arch="smallcnn",
        recipe_name="onecycle-finetune-none-default",
        n=40,
        seed=0,
        cache_npy=tmp / "c.npy",
        cache_meta=tmp / "c.json",
        split_parquet=tmp / "split3.parquet",
        subset_csv=tmp / "s3.csv",
        source_ckpt=None,
        out_metrics=out / "metrics.json",
        out_predictions=out / "predictions.parquet",
        out_val_predictions=out / "val_predictions.parquet",
        out_history=out / "history.csv",
        lr_json=None,
    )
    assert metrics["train_positives"]["Emphysema"] == int((subset["Emphysema"] == 1).sum())
    preds = pd.read_parquet(out / "predictions.parquet")
    assert (preds["y_Emphysema"] == -1).any()
    for label in labels:
        known = preds[f"y_{label}"] >= 0
        want = roc_auc_score(preds.loc[known, f"y_{label}"], preds.loc[known, f"p_tta_{label}"])
        assert metrics["test_auc_per_label_tta"][label] == pytest.approx(want, abs=1e-12)
    history = pd.read_csv(out / "history.csv")
    assert np.isfinite(history.query("kind == 'epoch'")["val_loss"]).all()
    scores = run_scores({"path": str(out), "headline_metric": "test_auc_tta"}, "test_auc_tta")
    point = stats.mean_auc_replicates(scores["y"], scores["p"], np.ones((1, len(preds))))[0]
    assert point == pytest.approx(metrics["test_auc_tta"], abs=1e-9)


def test_every_checkpoint_loads_weights_only(prepared):
    tmp, _ = prepared
    for path in tmp.rglob("*.pt"):
        torch.load(path, map_location="cpu", weights_only=True)
    assert json.loads((tmp / "sel" / "metrics.json").read_text())["family"] == "cnn"


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_every_evaluation_of_a_run_takes_amp_from_the_settings(prepared, monkeypatch, amp):
    """Validation inside training, the validation TTA and both test passes enter bf16 autocast exactly
    when train.amp says so (the test set was once evaluated without the settings, so train.amp and
    train.channels_last were ignored there: stage winners are picked on the validation TTA)."""
    tmp, config = prepared
    config = copy.deepcopy(config)
    config["train"].update({"amp": amp, "tta": 2, "epochs": 2})
    evaluations = []  # (enabled, grad enabled) of every autocast region entered without gradients
    real_autocast = torch.autocast

    def spy(device_type, *args, **kwargs):
        if not torch.is_grad_enabled():
            evaluations.append(kwargs.get("enabled", True))
        return real_autocast(device_type, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    _, metrics = run_job(tmp, config, tag=f"amp_{amp}")
    size = eval_batch_size(config["train"], torch.device("cpu"))
    batches = -(-metrics["n_val"] // size) * 2 + -(-metrics["n_test"] // size) + -(-metrics["n_val"] // size)
    assert len(evaluations) == batches  # 2 epochs' validation, test plain + TTA in one pass, validation TTA
    assert set(evaluations) == {amp == "bf16"}
    assert metrics["formats"]["amp"] == amp  # explicit: honoured, channels_last (auto) by the device rule
    assert metrics["test_auc_tta"] is not None and metrics["val_auc_tta"] is not None


def test_a_source_is_pretrained_with_its_recipe_from_exactly_the_named_source(prepared):
    """rule pretrain with sources.<name>.recipe = onecycle-gradual-<start>-transfer: the body starts as the
    start checkpoint's (its file and state hashes recorded), the history shows the one-cycle lrs of the
    three groups (/9, /3, /1) and the groups unfrozen after 10% and 20% of the iterations; the chain of
    sources is recorded."""
    from smalldl.jobs import pretrain as pretrain_jobs

    tmp, config = prepared
    start = models.build("smallcnn", 3)
    torch.manual_seed(1)
    for p in start.body.parameters():
        p.data.normal_(0.2, 0.05)
    start_ckpt = tmp / "start.pt"
    models.save_source(start_ckpt, arch="smallcnn", body=start.body.state_dict(), meta={"chain": ["imagenet"]})
    settings = cfg.train_settings({"epochs": 3, "batch_size": 8, "crop": 28, "max_lr": 0.002, "checkpoint": False})
    out = tmp / "pre"
    out.mkdir()
    kw = dict(
        source="cxr13", arch="smallcnn", task_name="emphysema", task=config["tasks"]["emphysema"], settings=settings,
        global_seed=config["seed"], cache_npy=tmp / "c.npy", cache_meta=tmp / "c.json",
        split_parquet=tmp / "split.parquet", out_ckpt=out / "m.pt", out_metrics=out / "m.json",
        out_history=out / "h.csv",
    )  # fmt: skip
    meta = pretrain_jobs.pretrain(recipe_name="onecycle-gradual-imagenet-transfer", start_ckpt=start_ckpt, **kw)
    assert meta["chain"] == ["imagenet", "cxr13"] and meta["recipe"] == "onecycle-gradual-imagenet-transfer"
    assert meta["formats"]["chosen_by"] == "device rule" and meta["settings"]["amp"] == "off"
    assert meta["start_sha256"] == shared_jobs.file_sha256(start_ckpt)
    # the validation AUC with a bootstrap standard error over the validation images (for the source-model
    # table's 'not learned' flag), recorded in the metadata next to the checkpoint
    assert 0 < meta["val_auc_se"] < 0.5 and meta["val_auc_bootstrap"] == 1000
    assert json.loads((out / "m.json").read_text())["val_auc_se"] == meta["val_auc_se"]
    assert meta["start_state_sha256"] == train.state_sha256(start.body.state_dict())  # exactly its weights
    saved_body, saved_meta = models.read_source(out / "m.pt", "smallcnn")
    assert saved_meta["chain"] == meta["chain"]
    assert train.state_sha256(saved_body) != meta["start_state_sha256"]  # and it trained from there
    steps = pd.read_csv(out / "h.csv", dtype={"trainable": str}).query("kind == 'step'").reset_index(drop=True)
    total = len(steps)
    assert np.allclose(steps["lr_group1"] * 9, steps["lr_group3"]) and np.allclose(
        steps["lr_group2"] * 3, steps["lr_group3"]
    )
    assert steps["lr"].idxmax() == int(np.ceil(0.3 * total))  # one-cycle: the peak at the cut
    assert steps["lr"].iloc[0] == pytest.approx(0.002 / 25) and steps["lr"].iloc[-1] < 0.002 / 1000
    first = {k: steps.index[steps["trainable"] == k].min() for k in ("3", "2,3", "1,2,3")}
    assert first == {"3": 0, "2,3": int(np.ceil(0.1 * total)), "1,2,3": int(np.ceil(0.2 * total))}
    # the same source from scratch (the default recipe): no start, PyTorch's init, one group from the start
    scratch = pretrain_jobs.pretrain(recipe_name=cfg.DEFAULT_SOURCE_RECIPE, start_ckpt=None, **kw)
    assert scratch["chain"] == ["cxr13"] and scratch["start_sha256"] is None
    steps = pd.read_csv(out / "h.csv", dtype={"trainable": str}).query("kind == 'step'")
    assert set(steps["trainable"]) == {"1,2,3"}


def test_the_test_set_is_predicted_in_one_pass_as_the_two_passes_did(prepared, monkeypatch):
    """predictions.parquet's p_ and p_tta_ columns and the test AUCs are those of the two passes before
    the single pass (the reference ``two_pass_predict``: batches of 128, views drawn per batch) with this
    run's selected weights, and the test images go through the model 1 + views times, not 1 + 1 + views:
    every image the model sees without gradients is counted (validation of each epoch, the test pass,
    the validation TTA, whose centre crop is the selected epoch's validation: views passes, not 1 + views)."""
    tmp, config = prepared
    config = copy.deepcopy(config)
    # several evaluation batches, none of 128; fp32 (the formats are not what this test is about)
    config["train"].update({"tta": 3, "eval_batch_size": 7, "amp": "off", "channels_last": "off"})
    views = 3
    evaluated = []  # images per forward pass without gradients
    real_forward = models.Classifier.forward

    def counting(self, x):
        if not torch.is_grad_enabled():
            evaluated.append(len(x))
        return real_forward(self, x)

    monkeypatch.setattr(models.Classifier, "forward", counting)
    out, metrics = run_job(tmp, config, tag="onepass")
    n_val, n_test = metrics["n_val"], metrics["n_test"]
    assert n_test > 7 and len(evaluated) > 3 * (1 + views)
    assert sum(evaluated) == metrics["epochs_run"] * n_val + (1 + views) * n_test + views * n_val
    monkeypatch.undo()
    saved = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    model = models.build("smallcnn", 1)
    model.load_state_dict(saved["state"])
    split = pd.read_parquet(tmp / "split.parquet")
    arr, info = cache_mod.open_cache(tmp / "c.npy", tmp / "c.json")
    task = config["tasks"]["emphysema"]
    test = shared_jobs.cached_data(arr, info, shared_jobs.selected_rows(split, "test"), task)
    kw = dict(device=torch.device("cpu"), task_type="binary")
    tta_seed = derive_seed(metrics["run_seed"], "tta")
    old_plain = two_pass_predict(model, test, config["train"], **kw)
    old_tta = two_pass_predict(model, test, config["train"], **kw, tta=views, seed=tta_seed)
    preds = pd.read_parquet(out / "predictions.parquet")
    np.testing.assert_allclose(preds["p_Emphysema"], old_plain[:, 0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(preds["p_tta_Emphysema"], old_tta[:, 0], rtol=0, atol=1e-7)
    assert metrics["test_auc"] == scores(old_plain, test, task_type="binary", labels=["Emphysema"])["auc"]
    assert metrics["test_auc_tta"] == scores(old_tta, test, task_type="binary", labels=["Emphysema"])["auc"]


def test_a_job_records_its_phases_and_they_add_up_to_its_time(prepared):
    tmp, config = prepared
    t0 = time.time()
    _, metrics = run_job(tmp, config, tag="phases")
    in_job = time.time() - t0
    phases = metrics["phase_s"]
    assert list(phases) == ["startup", "setup", "train", "validate", "test", "write"]
    assert all(v >= 0 for v in phases.values()), phases
    assert phases["train"] > 0 and phases["validate"] > 0 and phases["test"] > 0
    # the phases after start-up tile the job: their sum is its time to within the metrics' own writing
    assert sum(phases.values()) - phases["startup"] == pytest.approx(in_job, abs=0.5)
    # train + validate is fit's wall time
    assert phases["train"] + phases["validate"] == pytest.approx(metrics["wall_time_s"] - phases["test"], abs=0.05)
