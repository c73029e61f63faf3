"""The final model (smalldl/final.py, cam.py, cli.py): export -> load -> identical predictions, a corrupt
image among good ones, the seeded sample of class-activation maps."""

import numpy as np
import pytest
import torch
from PIL import Image

from smalldl import cam, cli, final, models
from smalldl.data.arrays import Data
from smalldl.evaluate import predict_views

TASK = {"type": "multilabel", "labels": ["Effusion", "Mass"]}
SETTINGS = {"crop": 28, "flip": True, "rotate": 10.0, "tta": 2, "amp": "off", "channels_last": "off",
            "batch_size": 4, "eval_batch_size": None}  # fmt: skip


def _model(tmp_path, seeds=(0, 1), temperature=1.0):
    members = {}
    for s in seeds:
        torch.manual_seed(s)
        members[s] = models.build("smallcnn", 2).state_dict()
    pre = final.preprocess_spec(width=32, height=32, crop=28, arch="smallcnn", max_pixels=10**6, min_side=8)
    spec = final.model_spec(
        task_name="t",
        task=TASK,
        arch="smallcnn",
        recipe="onecycle-finetune-none-default",
        outputs=2,
        settings=SETTINGS,
        preprocess=pre,
        tta_seed=7,
        temperature=temperature,
    )
    final.export(tmp_path / "model", members, spec)
    return members


def _images(folder, n=5, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + i, 36), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_export_load_gives_the_members_predictions_to_the_bit(tmp_path):
    members = _model(tmp_path)
    model = final.load(tmp_path / "model")
    assert model.spec["outputs"] == ["Effusion", "Mass"] and len(model.nets) == 2
    assert model.spec["preprocess"]["width"] == 32 and model.spec["commit"]
    paths = _images(tmp_path / "img")
    images = np.stack([final.read_image(p, model.spec) for p in paths])
    assert images.shape == (5, 32, 32) and images.dtype == np.uint8
    # the same networks built from the states in memory: the exported model predicts exactly their mean
    direct = []
    for state in members.values():
        net = models.build("smallcnn", 2)
        net.load_state_dict(state)
        plain, _ = predict_views(net.eval(), Data(images, np.zeros((5, 1))), model.settings,
                                 device=torch.device("cpu"), task_type="multilabel", tta=0, seed=7)  # fmt: skip
        direct.append(plain)
    expected = np.mean(np.stack(direct), axis=0)
    table, errors = final.predict_paths(model, [str(p) for p in paths], progress=False)
    assert errors == [] and list(table["image"]) == [str(p) for p in paths]
    assert np.array_equal(table[["p_Effusion", "p_Mass"]].to_numpy(), expected.astype(np.float64))
    # loaded twice: identical; with TTA: deterministic, and another number than without
    again, _ = final.predict_paths(final.load(tmp_path / "model"), [str(p) for p in paths], progress=False)
    assert again.equals(table)
    tta1, _ = final.predict_paths(model, [str(p) for p in paths], tta=True, progress=False)
    tta2, _ = final.predict_paths(model, [str(p) for p in paths], tta=True, progress=False)
    assert tta1.equals(tta2) and not tta1.equals(table)


def test_a_member_that_is_not_the_exported_file_is_refused(tmp_path):
    _model(tmp_path)
    (tmp_path / "model" / "seed1.pt").write_bytes(b"not weights")
    with pytest.raises(final.InputError, match="seed1.pt"):
        final.load(tmp_path / "model")
    with pytest.raises(final.InputError, match="not a final model"):
        final.load(tmp_path)


def test_predict_command_names_a_corrupt_image_and_scores_the_rest(tmp_path, capsys):
    _model(tmp_path, temperature=2.0)
    paths = _images(tmp_path / "img")
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    out = tmp_path / "pred.csv"
    rc = cli.main(["predict", str(tmp_path / "model"), str(tmp_path / "img"), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0
    bad = [line for line in err.splitlines() if "broken.png" in line]
    assert len(bad) == 1 and "cannot be decoded" in bad[0]
    import pandas as pd

    table = pd.read_csv(out)
    assert sorted(table["image"]) == sorted(str(p) for p in paths)
    probs = table[["p_Effusion", "p_Mass"]].to_numpy()
    assert ((probs > 0) & (probs < 1)).all()
    # a folder of nothing but broken images: exit status 2, one line each
    only = tmp_path / "only"
    only.mkdir()
    (only / "a.png").write_bytes(b"junk")
    assert cli.main(["predict", str(tmp_path / "model"), str(only), "--out", str(tmp_path / "x.csv"), "--quiet"]) == 2


def test_the_cam_sample_is_the_most_confident_of_each_kind_and_seeded():
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.7, 0.1, 0.05])
    sample = cam.cam_sample(y, p, 0.5, k=2, seed=3)
    assert [c for c, _ in sample] == ["true positive"] * 2 + ["false positive"] * 2 + ["false negative"] * 2
    assert [i for c, i in sample if c == "true positive"] == [0, 1]
    assert {i for c, i in sample if c == "false positive"} == {3, 5}
    assert [i for c, i in sample if c == "false negative"] == [6, 2]  # the lowest probability first
    assert sample == cam.cam_sample(y, p, 0.5, k=2, seed=3)
    # equal probabilities: the seed decides, the same way each time
    ties = [cam.cam_sample(np.zeros(6), np.full(6, 0.9), 0.5, k=1, seed=s)[0][1] for s in range(8)]
    assert len(set(ties)) > 1 and ties == [
        cam.cam_sample(np.zeros(6), np.full(6, 0.9), 0.5, k=1, seed=s)[0][1] for s in range(8)
    ]


def test_cam_maps_are_drawn_for_the_sample_and_for_new_images(tmp_path):
    _model(tmp_path)
    model = final.load(tmp_path / "model")
    paths = _images(tmp_path / "img", n=3)
    images = np.stack([final.read_image(p, model.spec) for p in paths])
    crops, maps = cam.cam_maps(model, images, 1)
    assert crops.shape == (3, 28, 28) and maps.shape == (3, 28, 28)
    assert maps.min() >= 0 and maps.max() <= 1
    cam.draw(crops, maps, ["a", "b", "c"], tmp_path / "fig.png", "sample")
    assert (tmp_path / "fig.png").stat().st_size > 1000
    rc = cli.main(["predict", str(tmp_path / "model"), *map(str, paths), "--out", str(tmp_path / "p.csv"),
                   "--cam", str(tmp_path / "maps"), "--quiet"])  # fmt: skip
    assert rc == 0
    assert sorted(f.name for f in (tmp_path / "maps").iterdir()) == sorted(
        f"img{i}.{label}.png" for i in range(3) for label in ("Effusion", "Mass")
    )


def test_the_ensemble_is_kept_unless_a_seed_is_better_on_validation():
    from smalldl.jobs.final import ensemble_choice

    assert ensemble_choice({0: 0.70, 1: 0.74}, 0.75)["kind"] == "ensemble"
    assert ensemble_choice({0: 0.70, 1: 0.74}, 0.74)["seeds"] == [0, 1]  # a tie keeps the ensemble
    single = ensemble_choice({0: 0.70, 1: 0.78, 2: 0.78}, 0.75)
    assert single["kind"] == "single" and single["seeds"] == [1] and "0.7800" in single["why"]
    assert ensemble_choice({3: 0.6}, 0.6) == {"kind": "single", "seeds": [3], "why": "the study has one seed"}
