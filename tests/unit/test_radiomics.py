"""Radiomics baselines: the paper's 79 features (names, hand-computed values, invariants), the pyradiomics
set, parallel extraction, the tuned classifiers, the rule jobs and their outputs, and bad input."""

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from skimage.feature import graycomatrix, graycoprops

from smalldl import config as cfg
from smalldl import radiomics as rad
from smalldl.errors import InputError
from smalldl.jobs import radiomics as radiomics_jobs

from ..conftest import ROOT

PROPS = rad.GLCM_PROPS


def feats(image):
    return dict(zip(rad.paper79_names(), rad.paper79(image), strict=True))


# ------------------------------------------------------------------------------------------ paper79


def test_paper79_has_79_named_columns_in_a_fixed_order():
    names = rad.paper79_names()
    assert len(names) == len(set(names)) == 79
    glcm = [n for n in names if n.startswith("glcm_")]
    assert len(glcm) == 72
    for prop in ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "correlation"):
        for d in (1, 2, 4, 6):
            for a in (0, 45, 90):
                assert f"glcm_{prop}_d{d}_a{a}" in glcm
    assert names[72:] == [
        "grey_mean",
        "grey_std",
        "grey_moment2",
        "grey_moment3",
        "grey_moment4",
        "grey_moment5",
        "shannon_entropy",
    ]
    assert rad.feature_names("paper79") == names


def stripes():
    """7x7 vertical stripes: grey 10 in columns 0, 2, 4, 6 and 13 in columns 1, 3, 5."""
    return np.tile(np.array([10, 13, 10, 13, 10, 13, 10], dtype=np.uint8), (7, 1))


def test_paper79_values_of_a_hand_computed_image():
    f = feats(stripes())
    # 0 degrees (right neighbour). d=1: every pair is (10,13) or (13,10), 42 of them, symmetric -> 1/2, 1/2
    assert f["glcm_contrast_d1_a0"] == pytest.approx(9.0)  # (13-10)^2
    assert f["glcm_dissimilarity_d1_a0"] == pytest.approx(3.0)
    assert f["glcm_homogeneity_d1_a0"] == pytest.approx(0.1)  # 1 / (1 + 9)
    assert f["glcm_ASM_d1_a0"] == pytest.approx(0.5)
    assert f["glcm_energy_d1_a0"] == pytest.approx(math.sqrt(0.5))
    assert f["glcm_correlation_d1_a0"] == pytest.approx(-1.0)
    # d=2: same parity, per row 3 pairs (10,10) and 2 pairs (13,13) -> 0.6, 0.4
    assert f["glcm_contrast_d2_a0"] == pytest.approx(0.0)
    assert f["glcm_homogeneity_d2_a0"] == pytest.approx(1.0)
    assert f["glcm_ASM_d2_a0"] == pytest.approx(0.6**2 + 0.4**2)
    assert f["glcm_correlation_d2_a0"] == pytest.approx(1.0)
    # d=4: columns (0,4), (1,5), (2,6) -> 2/3, 1/3; d=6: only (0,6) -> a single cell, correlation defined as 1
    assert f["glcm_ASM_d4_a0"] == pytest.approx(5 / 9)
    assert f["glcm_ASM_d6_a0"] == pytest.approx(1.0)
    assert f["glcm_energy_d6_a0"] == pytest.approx(1.0)
    assert f["glcm_correlation_d6_a0"] == pytest.approx(1.0)
    # 90 degrees: rows are identical, so every pair is equal: 4 columns of 10, 3 of 13 -> 4/7, 3/7
    for d in (1, 2, 4, 6):
        assert f[f"glcm_contrast_d{d}_a90"] == pytest.approx(0.0)
        assert f[f"glcm_dissimilarity_d{d}_a90"] == pytest.approx(0.0)
        assert f[f"glcm_ASM_d{d}_a90"] == pytest.approx(25 / 49)
        assert f[f"glcm_correlation_d{d}_a90"] == pytest.approx(1.0)
    # 45 degrees: scikit-image rounds the offset: d=1, 2 -> (1, 1); d=4 -> (3, 3); d=6 -> (4, 4)
    for d in (1, 2, 4):  # odd column shift: every pair differs
        assert f[f"glcm_contrast_d{d}_a45"] == pytest.approx(9.0)
        assert f[f"glcm_homogeneity_d{d}_a45"] == pytest.approx(0.1)
        assert f[f"glcm_correlation_d{d}_a45"] == pytest.approx(-1.0)
    assert f["glcm_contrast_d6_a45"] == pytest.approx(0.0)  # shift 4: columns (0,4), (1,5), (2,6)
    assert f["glcm_ASM_d6_a45"] == pytest.approx(5 / 9)
    # grey moments of 10 + 3 B with B ~ Bernoulli(3/7) (28 pixels of 10, 21 of 13)
    p, q = 3 / 7, 4 / 7
    assert f["grey_mean"] == pytest.approx(10 + 3 * p)
    assert f["grey_std"] == pytest.approx(3 * math.sqrt(p * q))
    assert f["grey_moment2"] == pytest.approx(9 * p * q)
    assert f["grey_moment3"] == pytest.approx(27 * p * q * (q - p))
    assert f["grey_moment4"] == pytest.approx(81 * p * q * (1 - 3 * p * q))
    assert f["grey_moment5"] == pytest.approx(243 * p * q * (q**4 - p**4))
    assert f["shannon_entropy"] == pytest.approx(-(p * math.log2(p) + q * math.log2(q)))


def test_paper79_matches_one_graycoprops_call_on_the_whole_glcm():
    """The per-offset evaluation (three times faster) gives what the plain 4-D call gives."""
    img = np.random.default_rng(0).integers(0, 256, (40, 33)).astype(np.uint8)
    angles = [0, np.pi / 4, np.pi / 2]
    glcm = graycomatrix(img, [1, 2, 4, 6], angles, levels=256, symmetric=True, normed=True)
    ref = np.concatenate([graycoprops(glcm, p).ravel() for p in PROPS])
    np.testing.assert_allclose(rad.paper79(img)[:72], ref, rtol=1e-9, atol=1e-12)


def test_constant_image_gives_defined_features():
    f = feats(np.full((20, 20), 117, dtype=np.uint8))
    assert all(math.isfinite(v) for v in f.values())
    for d in (1, 2, 4, 6):
        for a in (0, 45, 90):
            assert f[f"glcm_contrast_d{d}_a{a}"] == 0 and f[f"glcm_dissimilarity_d{d}_a{a}"] == 0
            assert f[f"glcm_homogeneity_d{d}_a{a}"] == 1 and f[f"glcm_ASM_d{d}_a{a}"] == 1
            assert f[f"glcm_energy_d{d}_a{a}"] == 1 and f[f"glcm_correlation_d{d}_a{a}"] == 1
    assert f["grey_mean"] == 117
    assert [f[n] for n in rad.MOMENT_NAMES[1:]] == [0, 0, 0, 0, 0]
    assert f["shannon_entropy"] == 0


def test_mirrored_image_keeps_0_and_90_degrees_and_turns_45_into_135():
    img = np.random.default_rng(1).integers(0, 256, (30, 41)).astype(np.uint8)
    f, m = feats(img), feats(img[:, ::-1])
    for name in rad.paper79_names():
        if not name.endswith("_a45"):
            assert m[name] == pytest.approx(f[name], rel=1e-9, abs=1e-12), name
    glcm = graycomatrix(img, [1, 2, 4, 6], [3 * np.pi / 4], levels=256, symmetric=True, normed=True)
    for prop in PROPS:
        at135 = graycoprops(glcm, prop)[:, 0]
        mirrored45 = [m[f"glcm_{prop}_d{d}_a45"] for d in (1, 2, 4, 6)]
        np.testing.assert_allclose(mirrored45, at135, rtol=1e-9, atol=1e-12)
        assert not np.allclose(mirrored45, [f[f"glcm_{prop}_d{d}_a45"] for d in (1, 2, 4, 6)])
    # a half turn keeps everything (symmetric GLCMs)
    r = feats(img[::-1, ::-1])
    assert all(r[n] == pytest.approx(f[n], rel=1e-9, abs=1e-12) for n in f)


def test_empty_small_or_wrong_type_images_are_refused_with_one_message():
    with pytest.raises(InputError, match="image 'x7': the image is empty"):
        rad.paper79(np.zeros((0, 12), dtype=np.uint8), where="image 'x7'")
    with pytest.raises(InputError, match="5x40 pixels is too small"):
        rad.paper79(np.zeros((5, 40), dtype=np.uint8))
    with pytest.raises(InputError, match="2-D grey image"):
        rad.paper79(np.zeros((3, 10, 10), dtype=np.uint8))
    with pytest.raises(InputError, match="uint8 grey levels"):
        rad.paper79(np.zeros((10, 10), dtype=np.float32))
    with pytest.raises(InputError, match="the image is empty"):
        rad.pyradiomics_features(np.zeros((10, 0), dtype=np.uint8))
    with pytest.raises(InputError, match="unknown feature set 'glcm'"):
        rad.extract(np.zeros((1, 10, 10), np.uint8), ["a"], "glcm")


def test_a_non_finite_feature_names_the_image(monkeypatch):
    values = np.zeros(79)
    values[5] = np.nan
    monkeypatch.setattr(rad, "paper79", lambda image, where="image": values)
    with pytest.raises(InputError, match=r"image 'b': paper79 feature\(s\) glcm_contrast_d2_a90 are not finite"):
        rad.extract(np.zeros((2, 10, 10), np.uint8), ["a", "b"], "paper79", rows=[1])


# -------------------------------------------------------------------------------------- pyradiomics


def test_pyradiomics_set_has_every_class_and_finite_values_for_a_constant_image():
    img = np.random.default_rng(2).integers(0, 256, (24, 24)).astype(np.uint8)
    f = rad.pyradiomics_features(img)
    classes = {name.split("_")[1] for name in f}
    assert classes == set(rad.PYRADIOMICS_CLASSES)
    assert len(f) > 90 and all(math.isfinite(v) for v in f.values())
    assert f["original_firstorder_Mean"] == pytest.approx(img.mean())
    assert f["original_firstorder_Maximum"] == img.max()
    const = rad.pyradiomics_features(np.full((24, 24), 200, dtype=np.uint8))
    assert list(const) == list(f) and all(math.isfinite(v) for v in const.values())
    assert rad.feature_names("pyradiomics") == list(f)


def test_pyradiomics_gets_float32_because_uint8_overflows_inside_it():
    img = np.random.default_rng(3).integers(0, 256, (24, 24)).astype(np.uint8)
    ours = rad.pyradiomics_features(img)
    extractor = rad._pyradiomics_extractor(rad.DEFAULT_SETTINGS)

    def run(arr):
        image = sitk.GetImageFromArray(arr)
        mask = sitk.GetImageFromArray(np.ones(arr.shape, np.uint8))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow warning for uint8
            out = extractor.execute(image, mask, label=1)
        return {k: float(v) for k, v in out.items() if not k.startswith("diagnostics_")}

    as_float = run(img.astype(np.float32))
    assert all(ours[k] == pytest.approx(as_float[k], rel=1e-6, abs=1e-9) for k in ours)
    as_uint8 = run(img)
    changed = [k for k in ours if not math.isclose(ours[k], as_uint8[k], rel_tol=1e-6, abs_tol=1e-9)]
    assert len(changed) > len(ours) / 2  # what the float32 conversion prevents


# --------------------------------------------------------------------------------------- extraction


def test_parallel_extraction_equals_serial_reads_a_readonly_memmap_and_reports_progress(tmp_path, capsys):
    images = np.random.default_rng(4).integers(0, 256, (13, 16, 18)).astype(np.uint8)
    np.save(tmp_path / "c.npy", images)
    arr = np.load(tmp_path / "c.npy", mmap_mode="r")
    ids = [f"i{k:02d}" for k in range(13)]
    rows = [0, 2, 3, 5, 7, 8, 9, 12]
    for featureset in ("paper79", "pyradiomics"):
        serial = rad.extract(arr, ids, featureset, rows=rows)
        parallel = rad.extract(arr, ids, featureset, workers=2, rows=rows, chunk=3)
        pd.testing.assert_frame_equal(serial, parallel)
        assert list(serial["image_id"]) == [ids[r] for r in rows]
        assert list(serial.columns[1:]) == rad.feature_names(featureset)
        np.testing.assert_allclose(serial.iloc[2, 1:].to_numpy(float), rad.image_features(images[3], featureset))
    assert "radiomics pyradiomics: 8/8 (100%)" in capsys.readouterr().err


def split_table(ids, labels, parts):
    table = pd.DataFrame({"image_id": ids, "patient_id": [f"p{i}" for i in range(len(ids))]})
    for name, col in labels.items():
        table[name] = col
    table["split"] = parts
    table["selected"] = True
    return table


def test_used_images_are_val_test_and_the_training_subsets_in_cache_order():
    ids = [f"i{k}" for k in range(8)]
    split = split_table(ids, {"y": [0] * 8}, ["train"] * 4 + ["val", "val", "test", "test"])
    split.loc[5, "selected"] = False  # val image left out by balancing
    subset = split.iloc[[2, 0]]
    assert rad.used_image_ids(ids, [split], [subset]) == ["i0", "i2", "i4", "i6", "i7"]
    with pytest.raises(InputError, match="image_id 'zz' is not in the cache"):
        rad.used_image_ids(ids, [], [pd.DataFrame({"image_id": ["zz"]})])


def test_feature_matrix_never_lets_a_nan_through():
    table = pd.DataFrame({"image_id": ["a", "b", "c"], "f1": [1.0, 2.0, 3.0], "f2": [0.0, np.nan, 1.0]})
    assert rad.feature_matrix(table, ["c", "a"], "feats.parquet").tolist() == [[3.0, 1.0], [1.0, 0.0]]
    with pytest.raises(InputError, match="feats.parquet: feature 'f2' of image_id 'b' is nan"):
        rad.feature_matrix(table, ["a", "b"], "feats.parquet")
    table.loc[1, "f2"] = np.inf
    with pytest.raises(InputError, match="feature 'f2' of image_id 'b' is inf"):
        rad.feature_matrix(table, ["b"], "feats.parquet")
    with pytest.raises(InputError, match="image_id 'd' has no features"):
        rad.feature_matrix(table, ["a", "d"], "feats.parquet")


# -------------------------------------------------------------------------------------- classifiers

SETTINGS = {"cv_folds": 3, "n_iter": 4, "rf_trees": 30}


def separable(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 6))
    x[:, 0] += 3 * y
    x[:, 1] *= 1000  # scales as different as the grey moments'
    return x, y


@pytest.mark.parametrize("model", rad.MODELS)
def test_each_model_is_a_tuned_pipeline_and_reproducible(model):
    x, y = separable()
    est, info = rad.fit_label(x, y, model, SETTINGS, seed=7)
    assert info["status"] == "tuned" and info["folds"] == 3 and info["cv_auc"] > 0.9
    steps = [name for name, _ in est.steps]
    assert steps == (["clf"] if model == "rf" else ["scale", "clf"])
    assert set(info["best_params"]) >= {"class_weight"}
    if model == "elasticnet":
        assert 0.05 <= info["best_params"]["l1_ratio"] <= 0.95
    if model == "l1":
        assert est.named_steps["clf"].l1_ratio == 1.0
    if model == "l2":
        assert est.named_steps["clf"].l1_ratio == 0.0
    est2, info2 = rad.fit_label(x, y, model, SETTINGS, seed=7)
    assert info2 == info
    np.testing.assert_array_equal(est.predict_proba(x), est2.predict_proba(x))


def test_labels_with_too_few_positives_are_handled_and_recorded():
    x, _ = separable(20)
    y = np.zeros(20, dtype=int)
    est, info = rad.fit_label(x, y, "l2", SETTINGS, seed=0)
    assert info["status"] == "single_class" and np.all(est.predict_proba(x)[:, 1] == 0)
    y[[3, 8]] = 1
    _, info = rad.fit_label(x, y, "l2", SETTINGS, seed=0)
    assert info["status"] == "tuned" and info["folds"] == 2  # 3 folds asked, 2 positives
    y[8] = 0
    est, info = rad.fit_label(x, y, "rf", SETTINGS, seed=0)
    assert info["status"] == "untuned" and info["cv_auc"] is None
    assert est.predict_proba(x).shape == (20, 2)


def test_uncertain_labels_are_left_out_of_the_classifier_and_its_scores():
    x, y = separable(60)
    y2 = np.c_[y, y].astype(np.float64)
    y2[:30, 1] = -1  # label b is uncertain for the first 30 images
    probs, infos = rad.fit_predict(x, y2, {"test": x}, ["a", "b"], "l2", SETTINGS, seed=0)
    assert "uncertain_masked" not in infos["a"] and infos["b"]["uncertain_masked"] == 30
    known_probs, _ = rad.fit_predict(x[30:], y[30:, None], {"test": x}, ["b"], "l2", SETTINGS, seed=0)
    np.testing.assert_array_equal(probs["test"][:, 1], known_probs["test"][:, 0])  # fitted on the 30 known only
    sc = rad.scores(y2, probs["test"], ["a", "b"])
    from smalldl.metrics import roc_auc_score

    assert sc["per_label"]["b"] == roc_auc_score(y[30:], probs["test"][30:, 1])
    assert np.isfinite(sc["loss"])


def test_select_best_takes_the_highest_validation_auc_first_on_ties():
    runs = {"l1": {"val_auc": 0.7}, "l2": {"val_auc": 0.8}, "elasticnet": {"val_auc": 0.8}, "rf": {"val_auc": None}}
    assert rad.select_best(runs) == "l2"
    assert rad.select_best({"l1": {"val_auc": float("nan")}, "rf": {"val_auc": 0.51}}) == "rf"
    assert rad.select_best({"rf": {"val_auc": None}}) == "rf"
    with pytest.raises(InputError):
        rad.select_best({})


# ---------------------------------------------------------------------------------------- rule jobs


def textured_dataset(tmp_path, n=90, size=20):
    """A cache whose label 'rough' is a texture (noise amplitude) and 'bright' a grey level."""
    rng = np.random.default_rng(5)
    rough = rng.integers(0, 2, n)
    bright = rng.integers(0, 2, n)
    base = 80 + 60 * bright[:, None, None] + rng.normal(0, 4, (n, 1, 1))
    noise = rng.normal(0, 1, (n, size, size)) * np.where(rough, 25, 6)[:, None, None]
    images = np.clip(base + noise, 0, 255).astype(np.uint8)
    ids = [f"img{k:03d}" for k in range(n)]
    np.save(tmp_path / "c.npy", images)
    (tmp_path / "c.json").write_text(json.dumps({"n": n, "height": size, "width": size, "image_ids": ids}))
    parts = ["train"] * 50 + ["val"] * 20 + ["test"] * 20
    split = split_table(ids, {"rough": rough, "bright": bright}, parts)
    split.to_parquet(tmp_path / "split.parquet", index=False)
    subset = split[split["split"] == "train"].iloc[:30].drop(columns=["split", "selected"])
    subset.to_csv(tmp_path / "sub.csv", index=False)
    return ids, split, subset


CONFIG = {
    "seed": 3,
    "tasks": {
        "rough": {"type": "binary", "labels": ["rough"]},
        "both": {"type": "multilabel", "labels": ["rough", "bright"]},
    },
}
#: What a CNN run's metrics.json holds (smalldl.jobs.train.finetune, a RunRecord); a radiomics run has all of it.
CNN_KEYS = {
    "task", "arch", "recipe", "schedule", "transfer", "source", "init", "n", "seed", "run_seed", "task_type",
    "labels", "n_train", "n_val", "n_test", "train_positives", "val_auc", "val_auc_tta", "val_loss",
    "val_auc_per_label", "test_auc", "test_auc_tta", "test_loss", "test_auc_per_label", "test_auc_per_label_tta",
    "selected_epoch", "epochs", "max_lr", "steps", "wall_time_s", "images_per_s", "source_checkpoint",
    "source_val_auc", "device", "python", "threads", "family",
}  # fmt: skip


def run_model(tmp_path, task, model, features="paper79", subset="sub.csv", settings=SETTINGS, n=30):
    out = tmp_path / "runs" / task / model
    metrics = radiomics_jobs.radiomics_model(
        task_name=task,
        task=CONFIG["tasks"][task],
        global_seed=CONFIG["seed"],
        featureset=features,
        model=model,
        n=n,
        seed=0,
        settings=settings,
        features_parquet=tmp_path / f"{features}.parquet",
        split_parquet=tmp_path / "split.parquet",
        subset_csv=tmp_path / subset,
        out_metrics=out / "metrics.json",
        out_predictions=out / "predictions.parquet",
    )
    return metrics, out


def test_features_job_extracts_only_the_used_images_and_is_complete(tmp_path):
    ids, split, subset = textured_dataset(tmp_path)
    table = radiomics_jobs.radiomics_features(
        featureset="paper79",
        cache_npy=tmp_path / "c.npy",
        cache_meta=tmp_path / "c.json",
        split_parquets=[tmp_path / "split.parquet"],
        subset_csvs=[tmp_path / "sub.csv"],
        images="used",
        settings={},
        out_parquet=tmp_path / "paper79.parquet",
        threads=2,
    )
    used = set(subset["image_id"]) | set(split.loc[split["split"] != "train", "image_id"])
    assert list(table["image_id"]) == [i for i in ids if i in used] and len(table) == 70
    assert pd.read_parquet(tmp_path / "paper79.parquet").equals(table)
    every = radiomics_jobs.radiomics_features(
        featureset="paper79",
        cache_npy=tmp_path / "c.npy",
        cache_meta=tmp_path / "c.json",
        split_parquets=[],
        subset_csvs=[],
        images="used",
        settings={},
        out_parquet=tmp_path / "all.parquet",
    )
    assert list(every["image_id"]) == ids
    assert list(tmp_path.glob(".*.tmp")) == []


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("rad")
    textured_dataset(tmp_path)
    for featureset in ("paper79", "pyradiomics"):
        radiomics_jobs.radiomics_features(
            featureset=featureset,
            cache_npy=tmp_path / "c.npy",
            cache_meta=tmp_path / "c.json",
            split_parquets=[],
            subset_csvs=[],
            images="all",
            settings={"bin_width": 25},
            out_parquet=tmp_path / f"{featureset}.parquet",
        )
    return tmp_path


@pytest.mark.parametrize("featureset", ["paper79", "pyradiomics"])
def test_model_job_writes_cnn_shaped_metrics_and_predictions(dataset, featureset):
    metrics, out = run_model(dataset, "rough", "l2", featureset)
    saved = json.loads((out / "metrics.json").read_text())
    assert CNN_KEYS <= set(saved)
    assert saved["family"] == "radiomics" and saved["arch"] == f"radiomics_{featureset}"
    assert saved["recipe"] == saved["model"] == "l2" and saved["featureset"] == featureset
    assert [saved[k] for k in ("schedule", "transfer", "source", "init")] == [None] * 4
    assert (saved["n_train"], saved["n_val"], saved["n_test"]) == (30, 20, 20)
    assert saved["test_auc"] > 0.8 and saved["val_auc"] > 0.8 and saved["cv_auc"] > 0.7
    assert set(saved["best_params"]["rough"]) == {"C", "class_weight"}
    split = pd.read_parquet(dataset / "split.parquet")
    preds = pd.read_parquet(out / "predictions.parquet")
    test = split[split["split"] == "test"]
    assert list(preds.columns) == ["image_id", "y_rough", "p_rough"]
    assert list(preds["image_id"]) == list(test["image_id"]) and list(preds["y_rough"]) == list(test["rough"])
    assert preds["p_rough"].between(0, 1).all()
    from sklearn.metrics import roc_auc_score

    assert saved["test_auc"] == pytest.approx(roc_auc_score(preds["y_rough"], preds["p_rough"]))


def test_multilabel_is_one_vs_rest_with_the_mean_auc(dataset):
    metrics, out = run_model(dataset, "both", "l1")
    assert set(metrics["best_params"]) == {"rough", "bright"}
    per = metrics["test_auc_per_label"]
    assert metrics["test_auc"] == pytest.approx((per["rough"] + per["bright"]) / 2)
    assert per["bright"] > 0.9  # the grey mean separates it
    preds = pd.read_parquet(out / "predictions.parquet")
    assert list(preds.columns) == ["image_id", "y_rough", "p_rough", "y_bright", "p_bright"]


def test_model_job_trains_on_exactly_the_training_subset(dataset):
    def probs():
        return pd.read_parquet(out / "predictions.parquet")["p_rough"].to_numpy()

    base, out = run_model(dataset, "rough", "l2")
    base_probs = probs()
    # features of training-split images outside the subset do not matter; those inside do
    table = pd.read_parquet(dataset / "paper79.parquet")
    split = pd.read_parquet(dataset / "split.parquet")
    subset = set(pd.read_csv(dataset / "sub.csv", dtype=str)["image_id"])
    outside = split.loc[(split["split"] == "train") & ~split["image_id"].isin(subset), "image_id"]
    changed = table.copy()
    changed.loc[changed["image_id"].isin(outside), changed.columns[1:]] = 1e6
    changed.to_parquet(dataset / "paper79.parquet", index=False)
    try:
        again, _ = run_model(dataset, "rough", "l2")
        assert again["best_params"] == base["best_params"] and np.array_equal(probs(), base_probs)
        changed.loc[changed["image_id"].isin(subset), "grey_mean"] = np.arange(len(subset)) * 1e3
        changed.to_parquet(dataset / "paper79.parquet", index=False)
        run_model(dataset, "rough", "l2")
        assert not np.array_equal(probs(), base_probs)
    finally:
        table.to_parquet(dataset / "paper79.parquet", index=False)
    assert base["n_train"] == 30 and base["train_positives"]["rough"] == int(
        pd.read_csv(dataset / "sub.csv")["rough"].sum()
    )


def test_a_nan_feature_stops_the_model_job_with_one_message_and_no_output(dataset, tmp_path):
    for name in ("c.npy", "c.json", "split.parquet", "sub.csv"):
        (tmp_path / name).write_bytes((dataset / name).read_bytes())
    table = pd.read_parquet(dataset / "paper79.parquet")
    victim = pd.read_csv(dataset / "sub.csv", dtype=str)["image_id"].iloc[4]
    table.loc[table["image_id"] == victim, "glcm_correlation_d6_a45"] = np.nan
    table.to_parquet(tmp_path / "paper79.parquet", index=False)
    with pytest.raises(InputError, match=f"feature 'glcm_correlation_d6_a45' of image_id '{victim}' is nan"):
        run_model(tmp_path, "rough", "l2")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.*"))
    with pytest.raises(InputError, match="has 30 rows, expected n=40"):
        run_model(dataset, "rough", "l2", n=40)


def test_constant_images_get_defined_features_that_a_model_can_use(tmp_path):
    """A blank image among the data: finite features, the model trains, nothing is NaN."""
    ids, split, subset = textured_dataset(tmp_path)
    images = np.load(tmp_path / "c.npy")
    blank = [ids.index(i) for i in subset["image_id"].iloc[:3]]
    images[blank] = 0
    np.save(tmp_path / "c.npy", images)
    for featureset in ("paper79", "pyradiomics"):
        table = radiomics_jobs.radiomics_features(
            featureset=featureset,
            cache_npy=tmp_path / "c.npy",
            cache_meta=tmp_path / "c.json",
            split_parquets=[],
            subset_csvs=[],
            images="all",
            settings={"bin_width": 25},
            out_parquet=tmp_path / f"{featureset}.parquet",
        )
        assert np.isfinite(table.iloc[:, 1:].to_numpy()).all()
        metrics, _ = run_model(tmp_path, "rough", "elasticnet", featureset)
        assert math.isfinite(metrics["test_auc"]) and math.isfinite(metrics["val_loss"])


def test_best_job_copies_the_model_with_the_highest_validation_auc(dataset, tmp_path):
    outs = []
    for model in ("l1", "rf", "l2"):
        metrics, out = run_model(dataset, "both", model, settings={**SETTINGS, "n_iter": 2})
        outs.append((model, metrics, out))
    best = max(outs, key=lambda o: o[1]["val_auc"])
    result = radiomics_jobs.radiomics_best(
        model_metrics=[o / "metrics.json" for _, _, o in outs],
        model_predictions=[o / "predictions.parquet" for _, _, o in outs],
        out_metrics=tmp_path / "best" / "metrics.json",
        out_predictions=tmp_path / "best" / "predictions.parquet",
    )
    saved = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["recipe"] == saved["model"] == "best" and saved["chosen_model"] == best[0]
    assert saved["test_auc"] == best[1]["test_auc"] and saved["selected_on"] == "val_auc"
    assert saved["candidates_val_auc"] == {m: x["val_auc"] for m, x, _ in outs}
    assert (tmp_path / "best" / "predictions.parquet").read_bytes() == (best[2] / "predictions.parquet").read_bytes()
    with pytest.raises(InputError, match="not from the same run"):
        radiomics_jobs.radiomics_best(
            model_metrics=[outs[0][2] / "metrics.json"],
            model_predictions=[outs[1][2] / "predictions.parquet"],
            out_metrics=tmp_path / "m",
            out_predictions=tmp_path / "p",
        )


# ------------------------------------------------------------------------------------ config and DAG


def test_radiomics_config_defaults_and_unknown_keys():
    conf = cfg.validate(yaml.safe_load((ROOT / "config.yaml").read_text()))
    defaults = cfg.validate({k: v for k, v in conf.items() if k != "radiomics"})["radiomics"]
    assert defaults["featuresets"] == [] and defaults["models"] == ["l1", "l2", "elasticnet", "rf"]
    assert defaults["images"] == "used" and defaults["cv_folds"] >= 2
    assert conf["radiomics"]["featuresets"] == ["paper79"]
    bad = dict(conf, radiomics={"featuresets": ["paper79"], "n_iters": 3})
    with pytest.raises(InputError, match="unknown config key radiomics.n_iters"):
        cfg.validate(bad)
    with pytest.raises(InputError, match="radiomics.featuresets"):
        cfg.validate(dict(conf, radiomics={"featuresets": ["glcm"]}))


def dry_run_jobs(tmp_path, *configs):
    cmd = [
        sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(ROOT / "configs" / "tiny.yaml"), *map(str, configs),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = {}
    for line in (proc.stdout + proc.stderr).split("Job stats:", 1)[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_one_job_per_task_featureset_model_size_seed_and_none_when_off(tmp_path):
    tiny = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    study, radiomics = tiny["study"], tiny["radiomics"]
    combos = len(study["targets"]) * len(study["sizes"]) * len(study["seeds"]) * len(radiomics["featuresets"])
    counts = dry_run_jobs(tmp_path)
    datasets = {"synth_chest"}  # both targets are on the chest dataset
    assert counts["radiomics_features"] == len(datasets) * len(radiomics["featuresets"])
    assert counts["radiomics_model"] == combos * len(radiomics["models"])
    assert counts["radiomics_best"] == combos
    off = tmp_path / "off.yaml"
    off.write_text("radiomics: {featuresets: []}\n")
    counts = dry_run_jobs(tmp_path, off)
    assert not [rule for rule in counts if rule.startswith("radiomics")]
