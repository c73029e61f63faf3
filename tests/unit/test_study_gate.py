"""Issue 26: a leaking study cannot start, whatever its config calls the data.

- The config alone refuses a source on the same data as a target offered to it (listed or through a stage,
  directly or through any link of a chain) without ``exclude_patients_of``; the refusal stops the DAG build.
- "The same data" is the data's location, not the entry's name or params: a folder dataset inside the NIH
  images folder (or reached through a link) is ChestX-ray14; a folder over a copy of its PNGs is caught by
  the study gate on the files themselves.
- Every training job of the study (pretrain, lr_find, finetune, radiomics_model) waits for the one gate.
- A folder dataset without patient ids gets a start-up warning.
"""

import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from smalldl import config as cfg
from smalldl.errors import InputError
from smalldl.jobs import data as data_jobs
from smalldl.jobs import splits as split_jobs

from ..conftest import ROOT

PATIENTS, PER_PATIENT = 60, 2


@pytest.fixture
def nih_folder(tmp_path):
    """A ChestX-ray14-shaped folder (images/<patient>_<k>.png, distinct contents) and its index table, as
    the NIH adapter writes it (image ids with their suffix, NIH's patient ids)."""
    root = tmp_path / "ChestX-ray14"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for p in range(1, PATIENTS + 1):
        for k in range(PER_PATIENT):
            name = f"{p:08d}_{k:03d}.png"
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "images" / name)
            rows.append({"image_id": name, "patient_id": str(p), "path": str(root / "images" / name), "view": "PA",
                         "Pneumonia": int(p % 3 == 0), "Effusion": int(k == 1)})  # fmt: skip
    index = tmp_path / "nih.parquet"
    pd.DataFrame(rows).to_parquet(index, index=False)
    return root, index


def write_labels(csv, names, patients=False):
    lines = ["path,Effusion" + (",patient_id" if patients else "")]
    lines += [f"{n},{int(n.endswith('1.png'))}" + (f",{int(n[:8])}" if patients else "") for n in names]
    csv.write_text("\n".join(lines) + "\n")


def folder_study(nih_root, folder, csv, exclude=()):
    """Target Pneumonia on ChestX-ray14 (nih_root); source 'mine' pretrained on a folder dataset, offered
    to Pneumonia by a listed recipe."""
    return {
        "datasets": {
            "nih": {"kind": "nih", "params": {"path": str(nih_root)}},
            "mine": {"kind": "folder", "params": {"path": str(folder), "csv": str(csv)}},
        },
        "tasks": {
            "pneumonia": {"dataset": "nih", "type": "binary", "labels": ["Pneumonia"], "test_fraction": 0.2},
            "effusion": {
                "dataset": "mine",
                "type": "binary",
                "labels": ["Effusion"],
                "test_fraction": 0.0,
                "balance": False,
                "exclude_patients_of": list(exclude),
            },
        },
        "sources": {"mine": {"task": "effusion"}},
        "study": {
            "targets": ["pneumonia"],
            "recipes": ["onecycle-finetune-mine-transfer"],
            "sizes": [20],
            "seeds": [0],
        },
    }


def test_a_folder_dataset_over_the_nih_images_folder_is_chestxray14(nih_folder, tmp_path):
    """Today a folder dataset is other data than any nih entry: the source trained on the target's test
    images is accepted. The folder is inside the NIH folder (or reached through a link to it): refused."""
    root, _ = nih_folder
    names = sorted(p.name for p in (root / "images").iterdir())
    write_labels(tmp_path / "mine.csv", names)
    link = tmp_path / "link"
    link.symlink_to(root / "images")
    for folder in (root / "images", link):
        with pytest.raises(InputError) as err:
            cfg.validate(folder_study(root, folder, tmp_path / "mine.csv"), check_pools=False)
        msg = str(err.value)
        assert msg.startswith(
            "test leakage: source mine is pretrained on task effusion, on the same data as target pneumonia "
            "(datasets mine and nih), and is offered to pneumonia through study.recipes"
        )
        assert "Fix: add pneumonia to tasks.effusion.exclude_patients_of" in msg and "sources.mine.targets" in msg
    # exclude_patients_of across the two entries (today: 'task is on another dataset') fixes it
    config = cfg.validate(folder_study(root, link, tmp_path / "mine.csv", exclude=["pneumonia"]), check_pools=False)
    assert cfg.same_data(config, "pneumonia", "effusion")


def test_a_folder_over_a_copy_of_the_pngs_is_stopped_by_the_gate_on_the_files(nih_folder, tmp_path):
    """A copy elsewhere: the config cannot tell (and says nothing), today's guard compared nothing (other
    data); the gate finds the target's validation/test files among the source's by their content. The
    folder has no patient column: a start-up warning says what that risks."""
    root, nih_index = nih_folder
    copy = tmp_path / "copy"
    shutil.copytree(root / "images", copy)
    names = sorted(p.name for p in copy.iterdir())
    write_labels(copy / "labels.csv", names)
    config = folder_study(root, copy, copy / "labels.csv")
    said = []
    cfg.validate(config, check_pools=False, say=said.append)
    assert not cfg.same_data(config, "pneumonia", "effusion")
    warning = [line for line in said if line.startswith("WARNING: datasets.mine:")]
    assert len(warning) == 1 and "no patient column 'patient_id'" in warning[0]
    assert "every image is its own patient: follow-up images of one person can be split" in warning[0]
    mine_index = tmp_path / "mine.parquet"
    data_jobs.index(dataset_name="mine", dataset=config["datasets"]["mine"], out_parquet=mine_index)
    splits = {}
    for task, index in (("pneumonia", nih_index), ("effusion", mine_index)):
        splits[task] = tmp_path / f"{task}.parquet"
        split_jobs.split(task_name=task, task=config["tasks"][task], global_seed=1, index_parquet=index,
                         excluded_from=[], out_split=splits[task], out_manifest=tmp_path / f"{task}.json")  # fmt: skip
    pairs = cfg.gate_pairs(config)
    link = {"source": "mine", "task": "effusion", "same_data": False, "excludes_target": False}
    assert pairs == [{"target": "pneumonia", "source": "mine", "links": [link]}]
    with pytest.raises(InputError) as err:
        split_jobs.study_gate(pairs=pairs, task_datasets={"pneumonia": "nih", "effusion": "mine"},
                              split_parquets=splits, index_parquets={"nih": nih_index, "mine": mine_index},
                              out_json=tmp_path / "gate.json")  # fmt: skip
    msg = str(err.value)
    target = pd.read_parquet(splits["pneumonia"])
    used = int((target["split"].isin(["val", "test"]) & target["selected"]).sum())
    assert re.search(rf"which shares 0 patients and {used} image files \(\d+ test; e\.g\. {re.escape(str(root))}", msg)
    assert "datasets mine and nih hold the same images under two entries" in msg
    assert not (tmp_path / "gate.json").exists()
    # with patient ids the warning goes
    write_labels(copy / "labels.csv", names, patients=True)
    said.clear()
    cfg.validate(folder_study(root, copy, copy / "labels.csv"), check_pools=False, say=said.append)
    assert not [line for line in said if "patient column" in line]


def chain_study(stages):
    """Target cxr14 on ChestX-ray14; source cxr13 on it without exclusion, not offered itself; source
    'limb' (other data) pretrained from cxr13 and offered to cxr14, listed or by the source stage."""
    study = {"targets": ["cxr14"], "sizes": [50], "seeds": [0]}
    if stages:
        study |= {"recipes": [], "stages": {"start": "onecycle-finetune-none-default",
                                            "vary": [{"axis": "source", "values": ["none", "limb"]}]}}  # fmt: skip
    else:
        study["recipes"] = ["onecycle-finetune-limb-transfer"]
    return {
        "datasets": {"nih": {"kind": "nih"}, "limbs": {"kind": "synthetic_limb"}},
        "tasks": {
            "cxr14": {"dataset": "nih", "type": "binary", "labels": ["Effusion"]},
            "cxr13": {"dataset": "nih", "type": "binary", "labels": ["Nodule"], "test_fraction": 0.0},
            "mura": {"dataset": "limbs", "type": "binary", "labels": ["abnormal"], "test_fraction": 0.0},
        },
        "sources": {
            "cxr13": {"task": "cxr13"},
            "limb": {"task": "mura", "recipe": "onecycle-finetune-cxr13-transfer"},
        },
        "study": study,
    }


@pytest.mark.parametrize("stages", [False, True], ids=["listed", "staged"])
def test_a_chain_is_judged_through_every_link(stages):
    """limb is on other data, but it starts from cxr13, which saw cxr14's patients: refused naming the link
    and the keys (today nothing checked the chain before its fine-tuning jobs)."""
    with pytest.raises(InputError) as err:
        cfg.validate(chain_study(stages), check_pools=False)
    msg = str(err.value)
    how = "study.stages" if stages else "study.recipes"
    assert msg.startswith(
        "test leakage: source cxr13 (source limb is pretrained from it) is pretrained on task cxr13, on the same "
        f"data as target cxr14 (dataset nih), and is offered to cxr14 through {how}"
    )
    assert msg.endswith("Fix: add cxr14 to tasks.cxr13.exclude_patients_of, or list only other targets in "
                        "sources.cxr13.targets or sources.limb.targets")  # fmt: skip
    fixed = chain_study(stages)
    fixed["tasks"]["cxr13"]["exclude_patients_of"] = ["cxr14"]
    cfg.validate(fixed, check_pools=False)


# ----------------------------------------------------------------------- the DAG: nothing trains first


def snakemake(tmp_path, *args):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--cores", "1",
           "--directory", str(tmp_path), *map(str, args)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("form", ["listed", "staged"])
def test_a_leaking_tiny_study_stops_at_the_dag_build(tmp_path, form):
    """configs/tiny.yaml with ChestX-ray13 avoiding Emphysema's patients only (not cxr14's): offered to cxr14
    by the source stage, or by a listed recipe: no job is planned, one message says why."""
    extra = tmp_path / "leak.yaml"
    text = "tasks: {cxr13: {exclude_patients_of: [emphysema]}}\n"
    if form == "listed":
        text += "study: {recipes: [onecycle-finetune-cxr13-transfer], stages: null}\n"
    extra.write_text(text)
    proc = snakemake(tmp_path, "--configfile", ROOT / "configs" / "tiny.yaml", extra)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    how = "study.stages" if form == "staged" else "study.recipes"
    assert (f"invalid configuration: test leakage: source cxr13 is pretrained on task cxr13, on the same data as "
            f"target cxr14 (dataset synth_chest), and is offered to cxr14 through {how}") in out  # fmt: skip
    assert "Job stats" not in out


TRAINING = ("pretrain", "lr_find", "finetune", "radiomics_model")


def test_every_training_job_of_the_study_waits_for_the_study_gate(tmp_path):
    """The tiny study, lr finder on: every pretrain, lr_find, finetune (listed recipes and the first stage)
    and radiomics_model job has the gate as an input; the gate needs split tables and indexes only."""
    extra = tmp_path / "lr.yaml"
    extra.write_text("train: {lr_finder: {enabled: true, size: 40}}\n")
    proc = snakemake(tmp_path, "--configfile", ROOT / "configs" / "tiny.yaml", extra, "--dag")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = {m[1]: m[2] for m in re.finditer(r"^\s*(\d+)\[label = \"(\w+)", proc.stdout, re.M)}
    edges = {(m[1], m[2]) for m in re.finditer(r"^\s*(\d+) -> (\d+)", proc.stdout, re.M)}
    (gate,) = [job for job, rule in rules.items() if rule == "study_gate"]
    training = {job: rule for job, rule in rules.items() if rule in TRAINING}
    assert set(training.values()) == set(TRAINING)
    assert [job for job in training if (gate, job) not in edges] == []
    upstream = {rules[a] for a, b in edges if b == gate}
    assert upstream == {"split", "index"}, upstream


def test_an_exclusion_whose_patient_ids_do_not_match_is_caught_on_the_files(nih_folder, tmp_path):
    """The folder inside the NIH folder, excluding Pneumonia's patients, but without a patient column: its
    patient ids are image ids, so the exclusion drops no one. The gate finds the files and says why the
    exclusion did not help."""
    root, nih_index = nih_folder
    names = sorted(p.name for p in (root / "images").iterdir())
    write_labels(tmp_path / "mine.csv", names)
    config = cfg.validate(
        folder_study(root, root / "images", tmp_path / "mine.csv", exclude=["pneumonia"]), check_pools=False
    )
    mine_index = tmp_path / "mine.parquet"
    data_jobs.index(dataset_name="mine", dataset=config["datasets"]["mine"], out_parquet=mine_index)
    splits = {"pneumonia": tmp_path / "pneumonia.parquet", "effusion": tmp_path / "effusion.parquet"}
    split_jobs.split(task_name="pneumonia", task=config["tasks"]["pneumonia"], global_seed=1,
                     index_parquet=nih_index, excluded_from=[], out_split=splits["pneumonia"],
                     out_manifest=tmp_path / "pneumonia.json")  # fmt: skip
    split_jobs.split(task_name="effusion", task=config["tasks"]["effusion"], global_seed=1,
                     index_parquet=mine_index, excluded_from=[(splits["pneumonia"], [])],
                     out_split=splits["effusion"], out_manifest=tmp_path / "effusion.json")  # fmt: skip
    with pytest.raises(InputError) as err:
        split_jobs.study_gate(pairs=cfg.gate_pairs(config), task_datasets={"pneumonia": "nih", "effusion": "mine"},
                              split_parquets=splits, index_parquets={"nih": nih_index, "mine": mine_index},
                              out_json=tmp_path / "gate.json")  # fmt: skip
    msg = str(err.value)
    assert "which shares 0 patients and " in msg
    assert ("tasks.effusion.exclude_patients_of lists pneumonia, but the patient ids of datasets mine and nih "
            "do not match") in msg  # fmt: skip
