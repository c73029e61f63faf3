import copy
import subprocess
import sys

import pytest
import yaml

from smalldl import config as cfg
from smalldl.errors import InputError

from ..conftest import ROOT


def _load(name="config.yaml"):
    return yaml.safe_load((ROOT / name).read_text())


def _merged_tiny():
    base = _load()
    tiny = _load("configs/tiny.yaml")

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v

    merge(base, tiny)
    return base


def test_default_and_tiny_configs_validate_and_get_defaults():
    conf = cfg.validate(_load())
    assert conf["train"]["optimizer"] == "adam"  # filled from the schema
    assert conf["tasks"]["emphysema"]["balance"] is True
    assert conf["plots"]["dpi"] == 150
    tiny = cfg.validate(_merged_tiny())
    assert tiny["study"]["archs"] == ["efficientnet_lite0"]
    assert tiny["study"]["recipes"] == [] and len(tiny["study"]["stages"]["vary"]) == 4  # the stage-wise study
    assert cfg.used_sources(tiny) == ["cxr13", "fractal", "imagenet", "mura"]
    assert cfg.pretrained_sources(tiny) == ["cxr13", "fractal", "mura"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("bogus",), 1, "unknown config key bogus"),
        (("train", "epochz"), 3, "unknown config key train.epochz"),
        (("tasks", "emphysema", "lables"), ["x"], "unknown config key tasks.emphysema.lables"),
        (("train", "epochs"), "ten", "config key train.epochs"),
        (("study", "sizes"), [0], "config key study.sizes.0"),
        (("tasks", "emphysema", "type"), "regression", "config key tasks.emphysema.type"),
    ],
)
def test_bad_key_or_type_names_the_key(path, value, expected):
    conf = _load()
    node = conf
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(InputError, match=expected.replace(".", r"\.")):
        cfg.validate(conf)


def test_cross_references_are_checked():
    conf = _load()
    bad = copy.deepcopy(conf)
    bad["study"]["targets"].append("nosuchtask")
    with pytest.raises(InputError, match="study.targets: unknown task 'nosuchtask'"):
        cfg.validate(bad)
    bad = copy.deepcopy(conf)
    bad["study"]["recipes"] = ["onecycle-finetune-imagenet22k-transfer"]
    with pytest.raises(InputError, match="source 'imagenet22k' is not under 'sources'"):
        cfg.validate(bad)
    bad = copy.deepcopy(conf)
    bad["study"]["recipes"] = ["sometimes-finetune-none-default"]
    with pytest.raises(InputError, match="unknown schedule 'sometimes'"):
        cfg.validate(bad)
    bad = copy.deepcopy(conf)
    bad["tasks"]["cxr14"]["dataset"] = "nih"
    with pytest.raises(InputError, match="tasks.cxr14.dataset: unknown dataset 'nih'"):
        cfg.validate(bad)
    bad = copy.deepcopy(conf)
    bad["train"]["crop"] = 500
    with pytest.raises(InputError, match="train.crop"):
        cfg.validate(bad)


def test_recipe_names_round_trip():
    r = cfg.Recipe.parse("onecycle-finetune-cxr13-transfer", {"cxr13": {}})
    assert (r.schedule, r.transfer, r.source, r.init) == ("onecycle", "finetune", "cxr13", "transfer")
    assert r.name == "onecycle-finetune-cxr13-transfer"
    with pytest.raises(InputError, match="source 'none' only goes with init 'default'"):
        cfg.Recipe.parse("onecycle-finetune-none-transfer", {})


def test_grid_and_used_tasks():
    conf = _load()
    conf["study"]["recipes"] = [
        "onecycle-finetune-none-default",
        "onecycle-finetune-cxr13-transfer",
        "onecycle-finetune-mura-transfer",
        "onecycle-finetune-fractal-transfer",
    ]
    conf = cfg.validate(conf)
    runs = cfg.runs(conf)
    s = conf["study"]
    assert len(runs) == len(s["targets"]) * len(s["archs"]) * len(s["recipes"]) * len(s["sizes"]) * len(s["seeds"])
    assert cfg.used_sources(conf) == ["cxr13", "fractal", "mura"]
    assert set(cfg.used_tasks(conf)) == {"emphysema", "cxr14", "cxr13", "mura", "fractal"}
    settings = cfg.source_settings(conf, "cxr13")
    assert settings["epochs"] == conf["pretrain"]["epochs"]


def test_config_module_does_not_import_torch():
    code = "import sys, smalldl.config; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
