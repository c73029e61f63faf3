"""The leak guard (config.check_offered_leaks at the DAG build; smalldl.leakage in rule study_gate): no
patient or image a source model was trained or validated on may be in the validation or test set of a
target fine-tuned from it, directly or through a chain.

The paper's study is checked at full scale on ChestX-ray14's real metadata (the torchxrayvision wheel),
with a stand-in official test list shaped like NIH's (whole patients, about 22% of the images), through
the same job functions and config functions the workflow runs."""

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smalldl import config as cfg
from smalldl import leakage
from smalldl.data.sources import nih
from smalldl.errors import InputError
from smalldl.jobs import splits as split_jobs

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(importlib.util.find_spec("torchxrayvision").submodule_search_locations[0]) / "data"


def split_table(rows):
    """A split table from (image_id, patient_id, split, selected) rows."""
    return pd.DataFrame(rows, columns=["image_id", "patient_id", "split", "selected"])


def test_shared_counts_patients_and_the_images_of_both_sides():
    target = split_table(
        [
            ("t1", "p1", "test", True),
            ("t2", "p1", "val", True),
            ("t3", "p2", "test", False),
            ("t4", "p3", "train", True),
        ]
    )
    source = split_table(
        [("s1", "p1", "train", True), ("s2", "p1", "val", True), ("s3", "p2", "train", True), ("s4", "p3", "val", True)]
    )
    # p1: in the target's val/test and the source's train/val; p2's test image was not selected; p3 is
    # in the target's training pool only
    assert leakage.shared(target, source) == {
        "patients": 1,
        "source_images": 2,
        "target_images": 2,
        "target_test_images": 1,
    }
    unselected = source.assign(selected=source["patient_id"] != "p1")
    assert leakage.shared(target, unselected)["patients"] == 0


def test_a_leak_through_a_two_step_chain_is_caught_naming_the_link():
    target = split_table([("t1", "p1", "test", True), ("t2", "p2", "val", True), ("t3", "p9", "train", True)])
    clean = split_table([("a1", "p5", "train", True), ("a2", "p6", "val", True)])
    leaky = split_table([("b1", "p2", "train", True), ("b2", "p7", "val", True), ("b3", "p2", "val", True)])
    links = [leakage.Link("older", "task_b", True), leakage.Link("newer", "task_a", True)]
    with pytest.raises(InputError) as err:
        leakage.check_pair(target="tgt", source="newer", target_split=target, target_paths={}, links=links,
                           link_splits={"task_a": clean, "task_b": leaky}, link_paths={})  # fmt: skip
    msg = str(err.value)
    assert "source older (source newer is pretrained from it)" in msg
    assert "shares 1 patients with the validation/test set of target tgt" in msg
    assert "2 of its training/validation images, 1 of the target's validation/test images (0 test)" in msg
    assert "tasks.task_b.exclude_patients_of" in msg and "sources.older.targets or sources.newer.targets" in msg
    # without the leaky link, the chain passes; a link on other data (and no shared file) is recorded, its
    # patient ids never compared
    record = leakage.check_pair(
        target="tgt", source="newer", target_split=target, target_paths={},
        links=[leakage.Link("older", "task_b", False), leakage.Link("newer", "task_a", True)],
        link_splits={"task_a": clean, "task_b": leaky}, link_paths={},
    )  # fmt: skip
    assert record["chain"] == ["older", "newer"] and record["checked"][0] == {
        "source": "older",
        "task": "task_b",
        "same_data": False,
        "patients": 0,
        "source_images": 0,
        "target_images": 0,
        "target_test_images": 0,
        "shared_files": 0,
    }
    assert record["checked"][1]["patients"] == 0


def test_config_chains_the_links_of_a_source_oldest_first():
    config = cfg.load(ROOT / "configs" / "tiny.yaml")
    # tiny: mura is pretrained from fractal (a chain); both are on other data than the chest targets
    assert cfg.source_chain(config, "mura") == ["fractal", "mura"]
    assert cfg.leak_links(config, "emphysema", "mura") == [
        {"source": "fractal", "task": "fractal", "same_data": False},
        {"source": "mura", "task": "mura", "same_data": False},
    ]
    assert cfg.leak_links(config, "emphysema", "cxr13") == [{"source": "cxr13", "task": "cxr13", "same_data": True}]
    assert cfg.leak_links(config, "emphysema", "imagenet") == [] and cfg.leak_links(config, "cxr14", "none") == []


# ----------------------------------------------------------------- the paper's study, at full scale


@pytest.fixture(scope="module")
def nih_index_parquet(tmp_path_factory):
    """ChestX-ray14's real metadata with a stand-in official test list: whole patients drawn at random
    until about 22% of the images (NIH's test_list.txt: 25,596 of 112,120 images, patient-disjoint)."""
    table = nih.read_entries(DATA / "Data_Entry_2017_v2020.csv.gz")
    table["path"] = "images/" + table["image_id"]
    per_patient = table.groupby("patient_id").size()
    order = np.random.default_rng(7).permutation(per_patient.index.to_numpy())
    cumulative = per_patient.loc[order].cumsum()
    test_patients = set(cumulative.index[cumulative <= 0.22 * len(table)])
    table["official_split"] = np.where(table["patient_id"].isin(test_patients), "test", "train_val")
    assert 0.21 <= (table["official_split"] == "test").mean() <= 0.22
    path = tmp_path_factory.mktemp("nih") / "nih.parquet"
    table.to_parquet(path, index=False)
    return path


def on_nih(config, task):
    return config["datasets"][config["tasks"][task]["dataset"]]["kind"] == "nih"


def run_gate(config, index_parquet, workdir, pairs=None):
    """Split every ChestX-ray14 task of ``config`` (every dataset entry of kind nih reads ``index_parquet``)
    as rule split does (subsets of the tasks a split must avoid included), then run rule study_gate's job
    on the (target, source) pairs whose chains are on ChestX-ray14 entries (``pairs``: default
    config.gate_pairs). Returns the gate's record; raises its InputError."""
    tasks = [t for t in cfg.used_tasks(config) if on_nih(config, t)]
    study = config["study"]
    paths, subsets = {}, {}
    pending = list(tasks)
    while pending:  # a task after the tasks whose patients it avoids
        name = next(t for t in pending if all(o in paths for o in config["tasks"][t]["exclude_patients_of"]))
        pending.remove(name)
        task = config["tasks"][name]
        paths[name] = workdir / f"{name}.parquet"
        split_jobs.split(
            task_name=name, task=task, global_seed=config["seed"], index_parquet=index_parquet,
            excluded_from=[(paths[o], subsets[o]) for o in task["exclude_patients_of"]],
            out_split=paths[name], out_manifest=workdir / f"{name}.json",
        )  # fmt: skip
        subsets[name] = []
        if name in study["targets"] and any(name in config["tasks"][t]["exclude_patients_of"] for t in tasks):
            for n in study["sizes"]:
                for seed in study["seeds"]:
                    csv = workdir / f"{name}_n{n}_s{seed}.csv"
                    split_jobs.subset(
                        task_name=name, task=task, global_seed=config["seed"], split_parquet=paths[name], n=n,
                        seed=seed, out_csv=csv, out_json=csv.with_suffix(".json"),
                    )  # fmt: skip
                    subsets[name].append(csv)
    pairs = cfg.gate_pairs(config) if pairs is None else pairs
    pairs = [p for p in pairs if on_nih(config, p["target"]) and all(on_nih(config, x["task"]) for x in p["links"])]
    named = {t: config["tasks"][t]["dataset"] for p in pairs for t in [p["target"], *(x["task"] for x in p["links"])]}
    return split_jobs.study_gate(
        pairs=pairs, task_datasets=named, split_parquets={t: paths[t] for t in named},
        index_parquets=dict.fromkeys(named.values(), index_parquet), out_json=workdir / "study_gate.json",
    )  # fmt: skip


def test_the_paper_config_offers_chestxray13_to_emphysema_only_and_passes_the_gate(nih_index_parquet, tmp_path):
    paper = cfg.load(ROOT / "configs" / "paper.yaml")
    record = run_gate(paper, nih_index_parquet, tmp_path)
    assert [(p["target"], p["source"]) for p in record["pairs"]] == [("emphysema", "cxr13")]  # on NIH's patients
    assert record["pairs"][0]["checked"][0]["patients"] == 0 and record["pairs"][0]["checked"][0]["shared_files"] == 0


def test_chestxray13_offered_to_every_target_is_refused_at_the_config_and_by_the_gate(nih_index_parquet, tmp_path):
    """The paper config as it was: ChestX-ray13 (avoiding only Emphysema's patients) offered to all four
    targets by the source stage. The config alone refuses it; were it let through, the gate refuses it on
    the split tables: about half of the other targets' test images are in its training split."""
    paper = cfg.load(ROOT / "configs" / "paper.yaml")
    old = copy.deepcopy(paper)
    old["sources"]["cxr13"]["targets"] = None
    refused = (
        r"test leakage: source cxr13 is pretrained on task cxr13, on the same data as target cxr14 \(dataset nih\), "
        r"and is offered to cxr14 through study.stages"
    )
    with pytest.raises(InputError, match=refused) as err:
        cfg.validate(copy.deepcopy(old))
    assert "Fix: add cxr14 to tasks.cxr13.exclude_patients_of, or list only other targets in sources.cxr13.targets" in (
        str(err.value)
    )
    # the gate, on the data (the config check skipped: old's stages offer cxr13 to every target)
    assert {(p["target"], p["source"]) for p in cfg.gate_pairs(old) if p["source"] == "cxr13"} == {
        (t, "cxr13") for t in ("cxr14", "pneumonia", "emphysema", "hernia")
    }
    with pytest.raises(InputError) as err:
        run_gate(old, nih_index_parquet, tmp_path)
    msg = str(err.value)
    target = "cxr14"  # the first leaking pair, in the study's order; the log has every one
    assert msg.startswith("test leakage: source cxr13 was trained and validated on task cxr13")
    assert f"validation/test set of target {target}" in msg and "(and 2 more leaking pairs" in msg
    assert f"Fix: add {target} to tasks.cxr13.exclude_patients_of" in msg and "sources.cxr13.targets" in msg
    found = leakage.shared(pd.read_parquet(tmp_path / f"{target}.parquet"), pd.read_parquet(tmp_path / "cxr13.parquet"))
    assert f"shares {found['patients']} patients and " in msg  # and the very image files
    split = pd.read_parquet(tmp_path / f"{target}.parquet")
    test_images = int((split["split"].eq("test") & split["selected"]).sum())
    assert found["target_test_images"] > 0.3 * test_images  # a large share of the test set, not an edge case
    assert not (tmp_path / "study_gate.json").exists()  # no record of a refused gate


# ---------------------------------------------------- one dataset under two entries (issue 26, point 2-3)


def two_entries(exclude):
    """ChestX-ray14 under two dataset entries whose params differ only in a download timeout: the target
    Pneumonia on one, a ChestX-ray13 source on the other, offered to Pneumonia by a listed recipe."""
    labels = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumothorax",
              "Consolidation", "Edema", "Fibrosis", "Pleural_Thickening", "Hernia"]  # fmt: skip
    return {
        "datasets": {
            "nih": {"kind": "nih", "params": {"path": "/data/ChestX-ray14"}},
            "nih_again": {"kind": "nih", "params": {"path": "/data/ChestX-ray14", "timeout": 60}},
        },
        "tasks": {
            "pneumonia": {
                "dataset": "nih",
                "type": "binary",
                "labels": ["Pneumonia"],
                "test_split": "official",
                "max_val_images": 400,
                "max_test_images": 800,
            },
            "cxr13": {
                "dataset": "nih_again",
                "type": "multilabel",
                "labels": labels,
                "test_fraction": 0.0,
                "exclude_positive": ["Pneumonia"],
                "exclude_patients_of": exclude,
                "max_images": 20000,
            },
        },
        "sources": {"cxr13": {"task": "cxr13"}},
        "study": {
            "targets": ["pneumonia"],
            "recipes": ["onecycle-finetune-cxr13-transfer"],
            "sizes": [50],
            "seeds": [0],
        },
    }


def test_a_second_entry_over_the_same_nih_data_is_the_same_data_and_refused_without_exclusion():
    """Today's code called nih_again other data (its params differ) and let the source through."""
    config = two_entries(exclude=[])
    with pytest.raises(InputError) as err:
        cfg.validate(config, check_pools=False)
    msg = str(err.value)
    assert msg.startswith(
        "test leakage: source cxr13 is pretrained on task cxr13, on the same data as target pneumonia (datasets "
        "nih_again and nih), and is offered to pneumonia through study.recipes"
    )
    assert msg.endswith("Fix: add pneumonia to tasks.cxr13.exclude_patients_of, or list only other targets in "
                        "sources.cxr13.targets")  # fmt: skip


def test_exclude_patients_of_works_across_entries_and_the_gate_proves_it_on_the_data(nih_index_parquet, tmp_path):
    """exclude_patients_of across the two entries (refused today: 'task is on another dataset') is accepted;
    on NIH's metadata the gate then finds no shared patient or image. Without it, the gate (were the config
    check bypassed) finds the shared patients and the very files."""
    config = cfg.validate(two_entries(exclude=["pneumonia"]), check_pools=False)
    assert cfg.same_data(config, "pneumonia", "cxr13")
    record = run_gate(config, nih_index_parquet, tmp_path / "excluded")
    assert record["pairs"][0]["checked"][0] | {"same_data": True} == {
        "source": "cxr13", "task": "cxr13", "same_data": True, "patients": 0, "source_images": 0,
        "target_images": 0, "target_test_images": 0, "shared_files": 0,
    }  # fmt: skip
    config["tasks"]["cxr13"]["exclude_patients_of"] = []
    (tmp_path / "leaky").mkdir()
    with pytest.raises(InputError) as err:
        run_gate(config, nih_index_parquet, tmp_path / "leaky")
    msg = str(err.value)
    found = leakage.shared(
        pd.read_parquet(tmp_path / "leaky" / "pneumonia.parquet"), pd.read_parquet(tmp_path / "leaky" / "cxr13.parquet")
    )
    assert found["patients"] > 100 and f"shares {found['patients']} patients and " in msg
    assert "validation/test set of target pneumonia" in msg and "tasks.cxr13.exclude_patients_of" in msg


def test_the_gate_compares_files_where_the_config_sees_other_data(nih_index_parquet, tmp_path):
    """A link the config calls other data (same_data False: e.g. a folder entry over a copy or through paths
    outside its folder) still leaks when it holds the target's image files: the gate compares the files,
    and then the patients too."""
    config = cfg.validate(two_entries(exclude=["pneumonia"]), check_pools=False)
    config["tasks"]["cxr13"]["exclude_patients_of"] = []
    link = {"source": "cxr13", "task": "cxr13", "same_data": False}
    pairs = [{"target": "pneumonia", "source": "cxr13", "links": [link]}]
    (tmp_path / "w").mkdir()
    with pytest.raises(InputError) as err:
        run_gate(config, nih_index_parquet, tmp_path / "w", pairs=pairs)
    msg = str(err.value)
    assert "image files (" in msg and "e.g. " in msg and "images/" in msg
    assert "datasets nih_again and nih hold the same images under two entries" in msg
