import copy
import re
import subprocess
import sys

import pytest
import yaml

from smalldl import config as cfg
from smalldl.errors import InputError

from ..conftest import ROOT


def _load(name="config.yaml"):
    return yaml.safe_load((ROOT / name).read_text())


def test_default_and_tiny_configs_validate_and_get_defaults():
    conf = cfg.validate(_load())
    assert conf["train"]["optimizer"] == "adam"  # filled from the schema
    assert conf["tasks"]["emphysema"]["balance"] is True
    assert conf["plots"]["dpi"] == 150
    tiny = cfg.validate(_load("configs/tiny.yaml"))
    assert tiny["study"]["archs"] == ["efficientnet_lite0"]
    assert len(tiny["study"]["stages"]["vary"]) == 4  # the stage-wise study
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
    # cxr13 and mura are pretrained from the ImageNet source: it is used through them
    assert cfg.used_sources(conf) == ["cxr13", "fractal", "imagenet", "mura"]
    assert set(cfg.used_tasks(conf)) == {"emphysema", "cxr14", "cxr13", "mura", "fractal"}
    settings = cfg.source_settings(conf, "cxr13")
    assert settings["epochs"] == conf["pretrain"]["epochs"]


def test_config_module_does_not_import_torch():
    code = "import sys, smalldl.config; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_source_recipe_chains_sources_and_a_cycle_is_an_error_naming_it():
    conf = _load()
    conf["sources"]["cxr13"]["recipe"] = "onecycle-gradual-mura-transfer"
    conf = cfg.validate(conf)
    assert cfg.source_chain(conf, "cxr13") == ["imagenet", "mura", "cxr13"]
    assert cfg.source_recipe(conf, "cxr13").transfer == "gradual"
    assert cfg.source_recipe(conf, "fractal").name == cfg.DEFAULT_SOURCE_RECIPE  # absent: from scratch
    cyclic = _load()
    cyclic["sources"]["mura"]["recipe"] = "onecycle-finetune-cxr13-transfer"
    cyclic["sources"]["cxr13"]["recipe"] = "onecycle-finetune-fractal-transfer"
    cyclic["sources"]["fractal"]["recipe"] = "onecycle-finetune-mura-transfer"
    with pytest.raises(InputError, match=r"the sources' recipes form a cycle: (\w+ -> ){3}\w+"):
        cfg.validate(cyclic)
    for bad, match in (
        ({"imagenet": {"weights": "imagenet", "recipe": "onecycle-finetune-none-default"}}, "sources.imagenet.recipe"),
        ({"cxr13": {"task": "cxr13", "recipe": "onecycle-finetune-nowhere-transfer"}}, "sources.cxr13.recipe"),
        ({"cxr13": {"task": "cxr13", "targets": ["nosuch"]}}, "sources.cxr13.targets: unknown task 'nosuch'"),
    ):
        conf = _load()
        conf["sources"].update(bad)
        with pytest.raises(InputError, match=match):
            cfg.validate(conf)


def test_a_source_restricted_to_some_targets_is_offered_to_those_only():
    conf = _load()
    del conf["study"]["stages"]  # the demo's stages; listed recipes first
    conf["study"]["recipes"] = [
        "onecycle-finetune-none-default",
        "onecycle-finetune-imagenet-transfer",
        "onecycle-finetune-cxr13-transfer",
        "onecycle-finetune-mura-transfer",
    ]
    conf["sources"]["cxr13"]["targets"] = ["emphysema"]
    conf["sources"]["mura"]["recipe"] = "onecycle-finetune-cxr13-transfer"  # inherits cxr13's restriction
    conf = cfg.validate(conf)
    recipes = {(r["task"], r["recipe"]) for r in cfg.runs(conf)}
    assert ("emphysema", "onecycle-finetune-cxr13-transfer") in recipes
    assert ("cxr14", "onecycle-finetune-cxr13-transfer") not in recipes
    assert ("cxr14", "onecycle-finetune-mura-transfer") not in recipes
    assert ("cxr14", "onecycle-finetune-imagenet-transfer") in recipes
    assert cfg.source_allowed(conf, "mura", "emphysema") and not cfg.source_allowed(conf, "mura", "cxr14")
    conf["study"]["stages"] = {
        "start": "onecycle-finetune-imagenet-transfer",
        "vary": [{"axis": "source", "values": ["none", "cxr13", "mura"]}],
    }
    conf = cfg.validate(conf)
    assert cfg.stage_candidates(conf, 0, None, "emphysema") == [
        "onecycle-finetune-none-default",
        "onecycle-finetune-cxr13-transfer",
        "onecycle-finetune-mura-transfer",
    ]
    assert cfg.stage_candidates(conf, 0, None, "cxr14") == ["onecycle-finetune-none-default"]
    conf["study"]["stages"]["vary"] = [{"axis": "source", "values": ["cxr13"]}]
    with pytest.raises(InputError, match=r"study.stages.vary\[0\]: no candidate is left for target 'cxr14'"):
        cfg.validate(conf)


def test_a_stage_sets_other_axes_when_it_begins():
    conf = _load()
    conf["study"]["recipes"] = []
    conf["study"]["stages"] = {
        "start": "onecycle-finetune-none-default",
        "vary": [
            {"axis": "schedule", "values": ["onecycle", "regular"]},
            {"axis": "transfer", "values": ["extractor", "gradual"], "set": {"source": "imagenet"}},
            {"axis": "init", "values": ["transfer", "moments"], "set": {"source": "imagenet", "schedule": "onecycle"}},
        ],
    }
    conf = cfg.validate(conf)
    assert cfg.stage_candidates(conf, 0, None, "emphysema") == [
        "onecycle-finetune-none-default",
        "regular-finetune-none-default",
    ]
    assert cfg.stage_candidates(conf, 1, "regular-finetune-none-default", "emphysema") == [
        "regular-extractor-imagenet-transfer",
        "regular-gradual-imagenet-transfer",
    ]
    assert cfg.stage_candidates(conf, 2, "regular-gradual-cxr13-transfer", "emphysema") == [
        "onecycle-gradual-imagenet-transfer",
        "onecycle-gradual-imagenet-moments",
    ]
    # the stage-wise recipes a run may need: from scratch, then ImageNet
    assert cfg.used_sources(conf) == ["imagenet"]
    for bad, match in (
        ({"axis": "transfer", "values": ["gradual"], "set": {"transfer": "finetune"}}, "varies transfer itself"),
        ({"axis": "transfer", "values": ["gradual"], "set": {"source": "nowhere"}}, "set.source: unknown source"),
    ):
        conf["study"]["stages"]["vary"] = [bad]
        with pytest.raises(InputError, match=match):
            cfg.validate(conf)


def test_a_stage_trains_its_candidates_for_its_own_epochs():
    """study.stages.vary[k].epochs (the authors' per-experiment EPOCHS): every candidate of the stage,
    the previous winner included, trains for them; a recipe at other than train.epochs is a run of its
    own (-e<N>), so a recipe two stages share at different epochs is trained for each, and the run's
    settings (the finetune job's params) carry its epochs."""
    conf = _load()
    conf["study"]["recipes"] = ["onecycle-finetune-none-default"]
    conf["train"]["epochs"] = 20
    conf["study"]["stages"] = {
        "start": "onecycle-finetune-none-default",
        "vary": [
            {"axis": "schedule", "values": ["onecycle", "regular"], "epochs": 10},
            {"axis": "source", "values": ["none", "imagenet"], "epochs": 30},
            {"axis": "init", "values": ["transfer", "moments"], "set": {"source": "imagenet"}, "epochs": 20},
        ],
    }
    conf = cfg.validate(conf)
    assert cfg.stage_candidates(conf, 0, None, "emphysema") == [
        "onecycle-finetune-none-default-e10",
        "regular-finetune-none-default-e10",
    ]
    # the previous winner is retrained for this stage's epochs, not reused from the stage before
    assert cfg.stage_candidates(conf, 1, "onecycle-finetune-none-default-e10", "emphysema") == [
        "onecycle-finetune-none-default-e30",
        "onecycle-finetune-imagenet-transfer-e30",
    ]
    # epochs equal to train.epochs: the plain name (one run for the stage and the listed recipe)
    assert cfg.stage_candidates(conf, 2, "onecycle-finetune-imagenet-transfer-e30", "emphysema") == [
        "onecycle-finetune-imagenet-transfer",
        "onecycle-finetune-imagenet-moments",
    ]
    assert cfg.recipe_settings(conf, "regular-finetune-none-default-e10")["epochs"] == 10
    assert cfg.recipe_settings(conf, "onecycle-finetune-none-default")["epochs"] == 20
    recipe = cfg.Recipe.parse("onecycle-finetune-imagenet-transfer-e30")
    assert (recipe.epochs, recipe.axes_name) == (30, "onecycle-finetune-imagenet-transfer")
    assert recipe.replace("init", "moments").name == "onecycle-finetune-imagenet-moments-e30"
    # runs of other epochs are not compared as if they differed in one axis (comparisons, findings)
    from smalldl.figures import axis_matches

    parse = cfg.Recipe.parse
    one, regular = parse("onecycle-finetune-none-default-e10"), "regular-finetune-none-default"
    assert axis_matches("schedule", one, parse(f"{regular}-e10"))
    assert not axis_matches("schedule", one, parse(regular))
    for bad, match in (
        ({"study": {"recipes": ["onecycle-finetune-none-default-e20"]}}, r"study.recipes\[0\].*-e suffix"),
        ({"study": {"stages": {"vary": [{"axis": "schedule", "values": ["regular"], "epochs": 0}]}}}, "epochs"),
    ):
        broken = copy.deepcopy(conf)
        for key, value in bad["study"].items():
            if key == "stages":
                broken["study"]["stages"]["vary"] = value["vary"]
            else:
                broken["study"][key] = value
        with pytest.raises(InputError, match=match):
            cfg.validate(broken)


def test_a_stage_s_epochs_reach_its_fine_tuning_jobs_and_the_lr_finder_runs_once(tmp_path):
    """snakemake -n: the first stage's candidates are jobs of their own (-e2) while the listed recipe
    keeps train.epochs; the lr finder runs once per recipe whatever its epochs."""
    from ..conftest import dry_run

    own = tmp_path / "own.yaml"
    own.write_text(
        "datasets: {mine: {kind: fractal, params: {n_categories: 2, images_per_category: 10, image_size: 32}}}\n"
        "tasks: {shapes: {dataset: mine, type: multilabel, labels: [category]}}\n"
        "study: {targets: [shapes], archs: [smallcnn], recipes: [onecycle-finetune-none-default], sizes: [8],\n"
        "        seeds: [0], stages: {start: onecycle-finetune-none-default,\n"
        "                             vary: [{axis: schedule, values: [onecycle, regular], epochs: 2}]}}\n"
        "train: {epochs: 3, lr_finder: {enabled: true, size: 8}}\n"
    )
    out = dry_run(tmp_path, own)
    finetune = set(re.findall(r"recipe=([a-z0-9-]+), n=8", out))
    assert finetune == {
        "onecycle-finetune-none-default",
        "onecycle-finetune-none-default-e2",
        "regular-finetune-none-default-e2",
    }
    lr_find = re.findall(r"rule lr_find:.*?wildcards: task=shapes, arch=smallcnn, recipe=([a-z0-9-]+)\n", out, re.S)
    assert sorted(lr_find) == ["onecycle-finetune-none-default", "regular-finetune-none-default"]
