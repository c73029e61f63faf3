"""Your own data in one command: a config with a dataset and a task and nothing else is a whole study on
that data alone (docs/usage.md "Your own data", configs/own-data.yaml): targets, recipes, sizes from the
training pool counted at start-up, seeds; what the study does not use is said before any work; sizes
and architectures are checked before any data is prepared."""

import re
import shutil

import pandas as pd
import pytest
import torchvision
import yaml
from PIL import Image
from pydicom.data import get_testdata_file

from smalldl import config as cfg
from smalldl.data import pool as pool_mod
from smalldl.errors import InputError
from smalldl.jobs import data as data_jobs
from smalldl.jobs import splits as split_jobs

from ..conftest import ROOT, dry_run

README_PATH = "/data/my_xrays"  # the folder the manual's snippet and the template point at


def make_folder(base, n_images=100, per_patient=1, dicoms=1):
    """A folder of tiny PNGs (and real DICOMs from pydicom's test data) with a labels.csv: ``nodule``
    alternating 0/1 by patient, ``effusion`` by image."""
    (base / "scans").mkdir(parents=True)
    rows = []
    for i in range(n_images):
        dicom = i >= n_images - dicoms
        rel = f"scans/{i:04d}.dcm" if dicom else f"scans/{i:04d}.png"
        if dicom:
            shutil.copy(get_testdata_file("RG1_UNCR.dcm"), base / rel)
        else:
            Image.new("L", (8, 8), color=i % 256).save(base / rel)
        patient = i // per_patient
        rows.append({"path": rel, "patient_id": f"P{patient:04d}", "nodule": patient % 2, "effusion": i % 3 == 0})
    table = pd.DataFrame(rows).astype({"effusion": int})
    table.to_csv(base / "labels.csv", index=False)
    return base


def readme_snippet():
    """The first YAML block of docs/usage.md's "Your own data", verbatim."""
    usage = (ROOT / "docs" / "usage.md").read_text()
    section = usage[usage.index("**Your own data**") :]
    start = section.index("```yaml") + len("```yaml")
    return section[start : section.index("```", start)]


def minimal(folder, **extra):
    """The manual's snippet on ``folder``, with ``extra`` top-level keys."""
    config = yaml.safe_load(readme_snippet().replace(README_PATH, str(folder)))
    config.update(extra)
    return config


def job_counts(out):
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", out, re.M)}


# --------------------------------------------------------------------------------- point 1, 2, 6


def test_the_readme_snippet_alone_runs_the_study_on_the_folder_alone(tmp_path):
    """docs/usage.md "Your own data" verbatim (a dataset and a task, nothing else), dry-run on a folder of 99
    PNGs and a DICOM: jobs on the user's folder only (no synthetic dataset, no source pretrained, no
    radiomics: off by default), the three recipes that need no data beyond it, sizes from its training
    pool (100 patients - 20 test - 10 validation = 70: sizes 50 and 70), seeds 0, 1, 2."""
    snippet = readme_snippet()
    assert "study:" not in snippet and "sources:" not in snippet  # the minimal form
    folder = make_folder(tmp_path / "my_xrays")
    (tmp_path / "mine.yaml").write_text(snippet.replace(README_PATH, str(folder)))
    work = tmp_path / "work"
    work.mkdir()
    out = dry_run(work, tmp_path / "mine.yaml")
    counts = job_counts(out)
    assert {"generate_synthetic", "fetch_nih", "pretrain"}.isdisjoint(counts), counts
    assert counts["study_gate"] == 1  # every training job waits for it (here it has no source chain to check)
    assert not [rule for rule in counts if rule.startswith("radiomics")], counts
    assert counts["index"] == counts["cache"] == counts["split"] == 1
    assert set(re.findall(r"dataset=(\w+)", out)) == {"mine"} and set(re.findall(r"task=(\w+)", out)) == {"nodule"}
    assert set(re.findall(r"recipe=([\w-]+)", out)) == set(cfg.BASE_RECIPES)
    assert set(re.findall(r"source=(\w+)", out)) == {"imagenet"} and counts["imagenet_weights"] == 1
    assert set(re.findall(r"\bn=(\d+)", out)) == {"50", "70"}
    assert set(re.findall(r"\bseed=(\d+)", out)) == {"0", "1", "2"}
    assert counts["finetune"] == 3 * 2 * 3 and counts["lr_find"] == 3  # recipes x sizes x seeds; lr finder on
    assert "arch=densenet121" in out and "w250.npy" in out  # the paper's protocol
    # what the study is, said before any work
    assert "sizes: 50, 70 (auto: the paper's sizes up to the training pool of nodule, 70 images)" in out
    assert re.search(r"recipes: onecycle-finetune-none-default, onecycle-finetune-imagenet-transfer, "
                     r"onecycle-gradual-imagenet-transfer \(", out)  # fmt: skip
    assert "data: datasets.mine (folder) for targets nodule" in out and "WARNING" not in out


def test_a_minimal_config_gets_every_task_the_base_recipes_auto_sizes_and_three_seeds(tmp_path):
    folder = make_folder(tmp_path / "f", n_images=300)
    config = minimal(folder)
    config["tasks"]["effusion"] = {"dataset": "mine", "type": "binary", "labels": ["effusion"]}
    said = []
    cfg.validate(config, say=said.append)
    study = config["study"]
    assert study["targets"] == ["nodule", "effusion"]
    assert study["recipes"] == list(cfg.BASE_RECIPES)
    assert study["sizes"] == [50, 100, 200] and study["seeds"] == [0, 1, 2]  # pool 300 - 60 - 30 = 210
    assert config["sources"] == {
        "imagenet": {"weights": "imagenet", "files": {}, "torchvision_weights": {}, "targets": None}
    }
    assert cfg.used_sources(config) == ["imagenet"] and cfg.pretrained_sources(config) == []
    assert not [line for line in said if line.startswith("WARNING")]


def test_every_source_the_user_defines_adds_its_recipe_and_its_task_is_no_target(tmp_path):
    config = minimal(make_folder(tmp_path / "f"))
    config["datasets"]["other"] = {"kind": "folder", "params": {"path": str(make_folder(tmp_path / "o"))}}
    config["tasks"]["other_task"] = {"dataset": "other", "type": "binary", "labels": ["effusion"]}
    config["sources"] = {"others": {"task": "other_task", "recipe": "onecycle-gradual-imagenet-transfer"}}
    cfg.validate(config)
    assert config["study"]["targets"] == ["nodule"]  # a source's task is no target
    assert config["study"]["recipes"] == [*cfg.BASE_RECIPES, "onecycle-finetune-others-transfer"]
    assert "imagenet" in config["sources"]  # implied: the other source's recipe starts from it
    # study.targets, study.recipes and listed sizes say otherwise
    config = minimal(make_folder(tmp_path / "g"), study={"recipes": ["onecycle-finetune-none-default"], "sizes": [20]})
    cfg.validate(config)
    assert config["study"]["recipes"] == ["onecycle-finetune-none-default"] and config["study"]["sizes"] == [20]


@pytest.mark.parametrize(
    ("pool", "sizes"),
    [
        (40, [40]),
        (300, [50, 100, 200, 300]),
        (5000, [50, 100, 200, 500, 1000, 2000]),
        (60, [50]),  # the pool within 25% of the largest size kept: no near-copy of it
        (62, [50]),
        (63, [50, 63]),
        (2000, [50, 100, 200, 500, 1000, 2000]),
        (2400, [50, 100, 200, 500, 1000, 2000]),  # above the paper's range: its sizes
        (2, [2]),
    ],
)
def test_auto_sizes_from_the_training_pool(pool, sizes):
    assert cfg.auto_sizes(pool) == sizes


def test_auto_sizes_on_a_pool_of_40_warn_and_of_one_image_stop(tmp_path):
    said = []
    config = cfg.validate(minimal(make_folder(tmp_path / "f", n_images=58)), say=said.append)
    assert config["study"]["sizes"] == [40]  # 58 - 12 test - 6 validation
    assert [line for line in said if line.startswith("WARNING")] == [
        "WARNING: study.sizes auto: task 'nodule' has 40 training images, fewer than the paper's smallest "
        "size (50): one size, 40; its results will be very noisy"
    ]
    with pytest.raises(InputError, match=r"study\.sizes: a training pool of 1 image\(s\) is too small.*'nodule'"):
        cfg.validate(minimal(make_folder(tmp_path / "g", n_images=4), tasks={
            "nodule": {"dataset": "mine", "type": "multilabel", "labels": ["nodule"], "val_fraction": 0.25,
                       "test_fraction": 0.5}
        }))  # fmt: skip


def test_auto_sizes_come_from_the_smallest_pool_of_the_targets(tmp_path):
    config = minimal(make_folder(tmp_path / "f", n_images=400))
    config["tasks"]["few"] = {"dataset": "mine", "type": "binary", "labels": ["nodule"], "max_images": 100}
    cfg.validate(config)
    assert config["study"]["sizes"] == [50, 70]  # 'few': 100 images capped, 70 in training


@pytest.mark.parametrize("per_patient", [1, 3])
def test_the_plan_time_pool_is_the_pool_the_split_job_draws_from(tmp_path, per_patient):
    """Counted at start-up from labels.csv, the pool equals the training split the split job writes
    (several images per patient, a capped task, a balanced binary task, a multilabel one)."""
    folder = make_folder(tmp_path / "f", n_images=150, per_patient=per_patient)
    config = minimal(folder)
    config["tasks"].update(
        capped={"dataset": "mine", "type": "binary", "labels": ["effusion"], "max_images": 90, "val_fraction": 0.2},
        both={"dataset": "mine", "type": "multilabel", "labels": ["nodule", "effusion"], "test_fraction": 0.3},
    )
    config["study"] = {"sizes": [10]}
    cfg.validate(config)
    data_jobs.index(dataset_name="mine", dataset=config["datasets"]["mine"], out_parquet=tmp_path / "i.parquet")
    for task in ("nodule", "capped", "both"):
        split_jobs.split(task_name=task, task=config["tasks"][task], global_seed=config["seed"],
                         index_parquet=tmp_path / "i.parquet", excluded_from=[], out_split=tmp_path / f"{task}.parquet",
                         out_manifest=tmp_path / f"{task}.json")  # fmt: skip
        drawn = pd.read_parquet(tmp_path / f"{task}.parquet")
        pool = pool_mod.training_pool(config, task)
        assert pool.images == int((drawn["split"] == "train").sum()) > 0, task


def test_synthetic_pools_come_from_the_generators_plan(tmp_path):
    """A synthetic dataset's pool is counted from its generator's plan (no image rendered) and equals the
    pool of the split the workflow makes on the rendered dataset."""
    spec = {"kind": "synthetic_chest", "params": {"n_patients": 80, "images_per_patient": [1, 3], "image_size": 32,
                                                   "prevalence": {"Emphysema": 0.3}}}  # fmt: skip
    config = {
        "datasets": {"chest": spec},
        "tasks": {
            "emph": {"dataset": "chest", "type": "binary", "labels": ["Emphysema"]},
            "rest": {"dataset": "chest", "type": "binary", "labels": ["Nodule"], "exclude_patients_of": ["emph"]},
        },
        "study": {"targets": ["emph"], "sizes": [10]},
    }
    cfg.validate(config)
    from smalldl.utils import derive_seed

    seed = derive_seed(config["seed"], "dataset", "chest")  # rules/data.smk: cfg_seed("dataset", name)
    data_jobs.generate_synthetic(dataset=config["datasets"]["chest"], out_dir=tmp_path / "raw", seed=seed)
    data_jobs.index(dataset_name="chest", dataset=spec, out_parquet=tmp_path / "i.parquet", raw=tmp_path / "raw")
    split_jobs.split(task_name="emph", task=config["tasks"]["emph"], global_seed=config["seed"],
                     index_parquet=tmp_path / "i.parquet", excluded_from=[], out_split=tmp_path / "s.parquet",
                     out_manifest=tmp_path / "s.json")  # fmt: skip
    drawn = pd.read_parquet(tmp_path / "s.parquet")
    assert pool_mod.training_pool(config, "emph").images == int((drawn["split"] == "train").sum())
    # a task that drops other tasks' patients: not known before their splits and subsets are drawn
    unknown = pool_mod.training_pool(config, "rest")
    assert unknown.images is None and "drops the patients of emph" in unknown.why


# ------------------------------------------------------------------------------------------ point 3


def test_the_template_holds_the_papers_protocol_and_one_line_makes_it_cpu_sized(tmp_path):
    folder = make_folder(tmp_path / "my_xrays")
    text = (ROOT / "configs" / "own-data.yaml").read_text().replace(README_PATH, str(folder))
    paper = cfg.validate(yaml.safe_load(text))
    assert paper["preprocess"]["width"] == 250 and paper["train"]["crop"] == 236 and paper["train"]["epochs"] == 20
    assert paper["study"]["archs"] == ["densenet121"] and paper["train"]["lr_finder"]["enabled"] is True
    assert paper["study"]["recipes"] == list(cfg.BASE_RECIPES) and paper["study"]["sizes"] == [50, 70]
    assert text.count("preset: paper\n") == 1
    cpu = cfg.validate(yaml.safe_load(text.replace("preset: paper\n", "preset: cpu\n")))
    assert (cpu["preprocess"]["width"], cpu["train"]["crop"], cpu["pretrain"]["crop"]) == (64, 56, 56)
    assert cpu["study"]["archs"] == ["efficientnet_lite0"] and cpu["train"]["epochs"] == 6
    assert cpu["train"]["lr_finder"]["enabled"] is False
    (tmp_path / "study.yaml").write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    out = dry_run(work, tmp_path / "study.yaml")
    counts = job_counts(out)
    assert counts["finetune"] == 18 and set(re.findall(r"dataset=(\w+)", out)) == {"mine"}


def test_the_preset_fills_only_what_the_config_does_not_set(tmp_path):
    config = minimal(make_folder(tmp_path / "f"), preset="cpu", preprocess={"width": 128}, train={"epochs": 10})
    config["study"] = {"archs": ["resnet18"]}
    cfg.validate(config)
    assert config["preprocess"]["width"] == 128 and config["train"]["epochs"] == 10
    assert config["study"]["archs"] == ["resnet18"] and config["train"]["crop"] == 56
    with pytest.raises(InputError, match="config key preset"):
        cfg.validate(minimal(make_folder(tmp_path / "g"), preset="gpu"))


# ------------------------------------------------------------------------------------------ point 4


def test_unused_datasets_and_sources_are_said_before_any_work(tmp_path):
    config = minimal(make_folder(tmp_path / "f"))
    config["datasets"]["old"] = {"kind": "synthetic_chest", "params": {"n_patients": 50}}
    config["datasets"]["other"] = {"kind": "folder", "params": {"path": str(make_folder(tmp_path / "o"))}}
    config["tasks"]["other_task"] = {"dataset": "other", "type": "binary", "labels": ["effusion"]}
    config["sources"] = {"others": {"task": "other_task"}}
    config["study"] = {"recipes": ["onecycle-finetune-none-default"]}
    said = []
    cfg.validate(config, say=said.append)
    warnings = [line for line in said if line.startswith("WARNING")]
    assert len(warnings) == 3, said
    assert warnings[0].startswith("WARNING: datasets.old is not used")
    assert warnings[1].startswith("WARNING: datasets.other is not used")
    assert warnings[2] == (
        "WARNING: sources.others is not used: no recipe or stage of the study starts from it, so it is not pretrained"
    )
    # a source that is used reads its dataset: said in the study's data lines
    config = minimal(make_folder(tmp_path / "g"))
    config["datasets"]["other"] = {"kind": "folder", "params": {"path": str(tmp_path / "o")}}
    config["tasks"]["other_task"] = {"dataset": "other", "type": "binary", "labels": ["effusion"]}
    config["sources"] = {"others": {"task": "other_task"}}
    said = []
    cfg.validate(config, say=said.append)
    assert "  data: datasets.other (folder) for sources others" in said[-1].splitlines()


def test_the_warning_is_printed_at_dag_build_and_the_unused_dataset_is_not_touched(tmp_path):
    folder = make_folder(tmp_path / "my_xrays")
    (tmp_path / "mine.yaml").write_text(readme_snippet().replace(README_PATH, str(folder)))
    (tmp_path / "more.yaml").write_text(yaml.safe_dump({"datasets": {"old": {"kind": "synthetic_chest"}}}))
    work = tmp_path / "work"
    work.mkdir()
    out = dry_run(work, tmp_path / "mine.yaml", tmp_path / "more.yaml")
    assert "WARNING: datasets.old is not used" in out
    assert "generate_synthetic" not in out and set(re.findall(r"dataset=(\w+)", out)) == {"mine"}


def test_a_recipe_naming_a_source_the_config_does_not_define_stops_naming_the_key(tmp_path):
    config = minimal(make_folder(tmp_path / "f"), study={"recipes": ["onecycle-finetune-chexpert-transfer"]})
    with pytest.raises(InputError, match=r"study\.recipes: 'onecycle-finetune-chexpert-transfer': source 'chexpert' "
                       r"is not under 'sources' \(imagenet\)"):  # fmt: skip
        cfg.validate(config)


# ------------------------------------------------------------------------------------------ point 5


def test_an_unknown_architecture_stops_at_start_up_naming_the_key(tmp_path):
    config = minimal(make_folder(tmp_path / "f"), study={"archs": ["resnet50", "densenet12"]})
    with pytest.raises(InputError, match=r"config key study\.archs\[1\]: unknown architecture 'densenet12' "
                       r"\(did you mean densenet121"):  # fmt: skip
        cfg.validate(config, check_pools=False)


def test_the_architectures_known_at_start_up_are_torchvisions_and_ours():
    assert set(cfg.TORCHVISION_ARCHS) == set(torchvision.models.list_models(module=torchvision.models))
    assert {"smallcnn", "efficientnet_lite0", "densenet121", "resnet50"} <= set(cfg.ARCHS)


def test_a_size_larger_than_the_training_pool_stops_at_start_up_naming_the_pool(tmp_path):
    folder = make_folder(tmp_path / "f")  # a training pool of 70
    too_big = (
        r"config key study\.sizes: 100 is larger than the training pool of task 'nodule' "
        r"\(70 images: 100 images of dataset mine, 70 of them in the training split\)"
    )
    with pytest.raises(InputError, match=too_big):
        cfg.validate(minimal(folder, study={"sizes": [50, 100]}))
    with pytest.raises(InputError, match=r"config key train\.lr_finder\.size: 2000 is larger than the training pool"):
        cfg.validate(minimal(folder, study={"sizes": [50]}, train={"lr_finder": {"size": 2000}}))
    # a job's process re-reads the config the main process checked: no second look at the data
    assert cfg.validate(minimal(folder, study={"sizes": [50, 100]}), check_pools=False)["study"]["sizes"] == [50, 100]
