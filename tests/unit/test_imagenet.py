"""ImageNet sources: real EfficientNet-Lite0 weights offline, torchvision weights from a local file,
a clear message offline, and source checkpoints that load with weights_only=True."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from smalldl import models
from smalldl.errors import InputError
from smalldl.init import initialise
from smalldl.jobs import pretrain as pretrain_jobs


def photo(name):
    img = Image.fromarray(getattr(skdata, name)()).resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
    return (x * 2 - 1)[None]  # tf_efficientnet_lite0 takes [-1, 1]


def load_source(model, path):
    """The body of a source checkpoint into ``model`` the way a run with init 'transfer' loads it."""
    body, meta = models.read_source(path, model.arch)
    initialise(model, "transfer", body, seed=0)
    return meta


def test_packaged_efficientnet_lite0_weights_are_real_imagenet_weights():
    model = models.lite0_imagenet_model().eval()
    with torch.no_grad():
        cat = model(photo("chelsea")).softmax(1)
        coffee = model(photo("coffee")).softmax(1)
    assert int(cat.argmax()) == 285 and float(cat.max()) > 0.5  # Egyptian cat
    assert int(coffee.argmax()) == 967 and float(coffee.max()) > 0.5  # espresso


def test_imagenet_source_checkpoint_carries_those_weights_into_the_classifier(tmp_path):
    config = {"sources": {"imagenet": {"weights": "imagenet", "files": {}}}}
    ckpt = tmp_path / "imagenet" / "efficientnet_lite0.pt"
    pretrain_jobs.imagenet_weights(
        source="imagenet",
        arch="efficientnet_lite0",
        files=config["sources"]["imagenet"].get("files", {}),
        out_ckpt=ckpt,
        out_metrics=tmp_path / "meta.json",
    )
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # every checkpoint loads weights_only
    assert raw["arch"] == "efficientnet_lite0" and len(raw["body"]) == 294  # 296 minus the ImageNet head
    assert raw["meta"]["provenance"] == "published"  # the packaged weights
    clf = models.build("efficientnet_lite0", 1)
    load_source(clf, ckpt)
    full = models.lite0_imagenet_model().eval()
    clf.eval()
    x = torch.rand(1, 1, 96, 96)
    with torch.no_grad():
        ours = clf.body((x.expand(-1, 3, -1, -1) - clf.mean) / clf.std)
        ref = full.forward_head(full.forward_features(x.expand(-1, 3, -1, -1) * 2 - 1), pre_logits=True)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_torchvision_weights_from_a_local_file_take_the_same_path(tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(tv.state_dict(), path)
    config = {"sources": {"imagenet": {"weights": "imagenet", "files": {"resnet18": str(path)}}}}
    ckpt = tmp_path / "src.pt"
    pretrain_jobs.imagenet_weights(
        source="imagenet",
        arch="resnet18",
        files=config["sources"]["imagenet"].get("files", {}),
        out_ckpt=ckpt,
        out_metrics=tmp_path / "meta.json",
    )
    clf = models.build("resnet18", 2)
    meta = load_source(clf, ckpt)
    assert meta["origin"] == str(path) and meta["weights"] == "imagenet"
    # any checkpoint passes as "ImageNet" here: its provenance is recorded as unverified, and the log says so
    assert meta["provenance"] == "unverified weights file"
    assert json.loads((tmp_path / "meta.json").read_text())["provenance"] == "unverified weights file"
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING:")]
    assert len(warning) == 1
    assert warning[0].startswith(f"WARNING: sources.imagenet.files.resnet18: the weights in {path}")
    assert "unverified" in warning[0] and "check their origin" in warning[0]
    assert torch.equal(clf.body.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    assert torch.equal(clf.body.bn1.running_var, tv.bn1.running_var)
    # a file for another architecture is refused with a message naming it
    config["sources"]["imagenet"]["files"]["densenet121"] = str(path)
    with pytest.raises(InputError, match="do not fit densenet121"):
        pretrain_jobs.imagenet_weights(
            source="imagenet",
            arch="densenet121",
            files=config["sources"]["imagenet"].get("files", {}),
            out_ckpt=tmp_path / "x.pt",
            out_metrics=tmp_path / "x.json",
        )


def test_offline_download_says_which_file_to_put_where(tmp_path, monkeypatch):
    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InputError) as err:
        models.imagenet_body_state("densenet121", None, "imagenet")
    msg = str(err.value)
    assert "densenet121-a639ec97.pth" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "sources.imagenet.files.densenet121" in msg


def test_smallcnn_has_no_published_weights_and_bad_files_are_named(tmp_path):
    with pytest.raises(InputError, match="sources.imagenet.files.smallcnn"):
        models.imagenet_body_state("smallcnn", None)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=str(bad)):
        models.imagenet_body_state("resnet18", bad)


def test_a_source_chooses_torchvision_s_weights_by_name(tmp_path, monkeypatch):
    """sources.<name>.torchvision_weights.<arch>: torchvision's DEFAULT for resnet50 is IMAGENET1K_V2 (a 2021
    recipe); the paper's authors had IMAGENET1K_V1. The job asks for the named weights' file (offline here:
    the message names the file it would have downloaded), and an unknown name names the config key."""
    import torchvision.models._api as api

    assert models.torchvision_weights("resnet50").name == "IMAGENET1K_V2"
    assert models.torchvision_weights("resnet50", "IMAGENET1K_V1").url.endswith("/resnet50-0676ba61.pth")

    def offline(url, *args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = {"out_ckpt": tmp_path / "m.pt", "out_metrics": tmp_path / "m.json"}
    with pytest.raises(InputError, match=r"resnet50-0676ba61\.pth"):
        pretrain_jobs.imagenet_weights(
            source="imagenet", arch="resnet50", files={}, versions={"resnet50": "IMAGENET1K_V1"}, **out
        )
    with pytest.raises(InputError, match=r"resnet50-11ad3fa6\.pth"):
        pretrain_jobs.imagenet_weights(source="imagenet", arch="resnet50", files={}, versions={}, **out)
    with pytest.raises(InputError, match=r"sources\.imagenet\.torchvision_weights\.resnet50.*IMAGENET1K_V1"):
        pretrain_jobs.imagenet_weights(source="imagenet", arch="resnet50", files={}, versions={"resnet50": "V9"}, **out)
