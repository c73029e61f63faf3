"""benchmarks/paper_cost.py: the images per phase of a tiny study worked out by hand (a dry run builds its DAG,
nothing is trained), the stages counted from the config, the split sizes' precedence, GPU-hours and the
dominant phase."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ..conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
pc = load_script("benchmarks/paper_cost.py")

CXR13_LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Fibrosis", "Pleural_Thickening", "Hernia"]  # fmt: skip

#: One synthetic target, one arch, two recipes (one from a pretrained source), 2 sizes, 1 seed, 2 epochs,
#: TTA 4, the lr finder on with 10 steps. Its split sizes are passed explicitly (SIZES).
TINY = {
    "datasets": {
        "synth_chest": {
            "kind": "synthetic_chest",
            # Emphysema positives in every split: the DAG build makes the split to count the training pool
            "params": {
                "n_patients": 60,
                "images_per_patient": [1, 2],
                "image_size": 32,
                "prevalence": {"Emphysema": 0.3},
            },
        }
    },
    "preprocess": {"width": 32},
    "tasks": {
        "emphysema": {"dataset": "synth_chest", "type": "binary", "labels": ["Emphysema"], "test_fraction": 0.2},
        "cxr13": {
            "dataset": "synth_chest",
            "type": "multilabel",
            "labels": CXR13_LABELS,
            "exclude_positive": ["Emphysema"],
            "exclude_patients_of": ["emphysema"],
            "test_fraction": 0.0,
        },
    },
    "sources": {"cxr13": {"task": "cxr13"}},  # pretrained from scratch
    "study": {
        "targets": ["emphysema"],
        "archs": ["smallcnn"],
        "recipes": ["onecycle-finetune-none-default", "onecycle-finetune-cxr13-transfer"],
        "sizes": [20, 40],
        "seeds": [0],
    },
    "train": {"epochs": 2, "batch_size": 16, "crop": 28, "tta": 4, "lr_finder": {"enabled": True, "steps": 10}},
    "pretrain": {"epochs": 3, "batch_size": 16, "crop": 28, "max_images": 100},
    "radiomics": {"featuresets": []},
}
SIZES = {"emphysema": {"val": 30, "test": 50}, "cxr13": {"train": 120, "val": 14}}

#: The tiny study worked out by hand.
EXPECTED = {
    # pretrain cxr13 (1 job): min(120 train images, max_images 100) x 3 epochs
    "pretrain_train": 100 * 3,  # 300
    # ... and its 14 validation images x 3 epochs
    "pretrain_val": 14 * 3,  # 42
    # lr_find (2 jobs, one per recipe) at the tuning size 40 (the largest size), batch 16: a pass over the
    # subset is batches of 16, 16 and 8; 10 steps = 3 passes (9 steps, 3 x 40 images) + one batch of 16
    "lr_find": 2 * (3 * 40 + 16),  # 272
    # finetune (4 jobs: 2 recipes x sizes 20 and 40 x 1 seed): n x 2 epochs
    "finetune_train": 2 * (20 + 40) * 2,  # 240
    # per-epoch validation: 30 validation images x 2 epochs x 4 runs
    "finetune_val": 30 * 2 * 4,  # 240
    # after training: validation with TTA, the original + 4 views, x 4 runs
    "val_tta": 30 * (1 + 4) * 4,  # 600
    # test without TTA, 50 images x 4 runs
    "test_plain": 50 * 4,  # 200
    # test with TTA, the original + 4 views, x 4 runs
    "test_tta": 50 * (1 + 4) * 4,  # 1000
}


def write(tmp_path, config, name="study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("paper_cost")
    return pc.estimate(write(base, TINY), given=SIZES, keep=base / "run")


def test_tiny_study_counts_by_hand(tiny):
    assert sorted((j["rule"], j["origin"]) for j in tiny.jobs) == sorted(
        [("pretrain", "dag")] + [("lr_find", "dag")] * 2 + [("finetune", "dag")] * 4
    )
    assert tiny.counts == {"smallcnn": EXPECTED}
    assert tiny.sizes == SIZES and {k for o in tiny.origin.values() for k in o.values()} == {"given"}
    # the TTA passes' original view repeats the plain test pass and the selected epoch's validation pass
    assert pc.repeated_images(tiny.jobs, tiny.config, tiny.sizes) == (30 + 50) * 4  # 320


def test_tiny_study_table(tiny):
    lines = pc.report(tiny.counts)
    assert lines[0] == "images:"
    rows = {line[:44].strip(): line.split() for line in lines[2:]}
    assert rows["lr finder"][-2:] == ["272", "272"]
    assert rows["test, TTA (original + k views)"][-1] == "1,000"
    assert rows["total forward+backward"][-1] == f"{300 + 272 + 240:,}"  # 812
    assert rows["total forward only"][-1] == f"{42 + 240 + 600 + 200 + 1000:,}"  # 2,082
    assert not any("GPU-hours" in line or "dominant" in line for line in lines)  # counts only


def test_main_prints_gpu_hours_and_the_dominant_phase(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pc, "estimate", lambda *a, **kw: tiny)
    # 0.01 img/s training, 0.04 evaluation: a forward+backward image costs 1/36 h, a forward one 1/144 h
    ips = tmp_path / "ips.json"
    ips.write_text(json.dumps({"smallcnn": {"train": 0.01, "eval": 0.04}}))
    assert pc.main(["--config", "study.yaml", "--throughputs", str(ips)]) == 0
    out = capsys.readouterr().out
    # pretraining 300 / 36 = 8.33 h; total 812 / 36 + 2,082 / 144 = 22.56 + 14.46 = 37.01 h; 8.33 / 37.01 = 22.5%
    assert "dominant phase: source pretraining: training: 8.3 of 37.0 GPU-hours (23%)" in out
    assert "GPU jobs: pretrain 1, lr_find 2, finetune 4" in out


def test_gpu_hours_and_dominant_phase():
    zero = {p.key: 0 for p in pc.PHASES}
    counts = {
        "a": {**zero, "finetune_train": 720_000, "finetune_val": 1_440_000},
        "b": {**zero, "finetune_train": 360_000, "test_tta": 3_600_000},
    }
    ips = pc.throughputs(None, {"a": 100, "b": 50}, {"a": 400, "b": 200})
    hours = pc.gpu_hours(counts, ips)
    assert hours["a"]["finetune_train"] == pytest.approx(2.0)  # 720,000 / 100 img/s / 3600
    assert hours["a"]["finetune_val"] == pytest.approx(1.0)  # 1,440,000 / 400 / 3600 (forward only: eval img/s)
    assert hours["b"]["finetune_train"] == pytest.approx(2.0)  # 360,000 / 50 / 3600
    assert hours["b"]["test_tta"] == pytest.approx(5.0)  # 3,600,000 / 200 / 3600
    assert pc.dominant(hours) == "dominant phase: test, TTA (original + k views): 5.0 of 10.0 GPU-hours (50%)"
    lines = pc.report(counts, hours)
    assert lines[-1] == pc.dominant(hours)
    total = next(line for line in lines if line.startswith("total ") and "100%" in line)
    assert total.split() == ["total", "3.0", "7.0", "10.0", "100%"]
    with pytest.raises(SystemExit, match="missing: b eval"):
        pc.gpu_hours(counts, pc.throughputs(None, {"a": 100, "b": 50}, {"a": 400}))


def test_throughput_flags_override_the_file(tmp_path):
    path = tmp_path / "ips.json"
    path.write_text(json.dumps({"a": {"train": 1, "eval": 2}}))
    assert pc.throughputs(path, pc.parse_pairs(["a=5"], "--train-ips"), {}) == {"a": {"train": 5.0, "eval": 2.0}}
    with pytest.raises(SystemExit, match="ARCH=IMAGES_PER_SECOND"):
        pc.parse_pairs(["a=fast"], "--train-ips")


def test_stages_counted_from_the_config(tmp_path):
    """Stage 1's candidates depend on stage 0's winner: not in the dry run; the grid counts every candidate."""
    vary = [{"axis": "schedule", "values": ["onecycle", "regular"]}, {"axis": "source", "values": ["none", "cxr13"]}]
    stages = {"start": "onecycle-finetune-none-default", "vary": vary}
    config = {**TINY, "study": {**TINY["study"], "recipes": ["onecycle-finetune-none-default"], "stages": stages}}
    est = pc.estimate(write(tmp_path, config), given=SIZES, keep=tmp_path / "run")
    recipes = {(j["wildcards"]["recipe"], j["origin"]) for j in est.jobs if j["rule"] == "finetune"}
    # stage 0 (in the dry run): {onecycle, regular}-finetune-none-default; stage 1 from either winner adds
    # {onecycle, regular}-finetune-cxr13-transfer
    assert recipes == {
        ("onecycle-finetune-none-default", "dag"),
        ("regular-finetune-none-default", "dag"),
        ("onecycle-finetune-cxr13-transfer", "stages"),
        ("regular-finetune-cxr13-transfer", "stages"),
    }
    assert [sum(j["rule"] == r for j in est.jobs) for r in pc.GPU_RULES] == [1, 4, 4 * 2]  # pretrain, lr_find, runs
    assert est.counts["smallcnn"]["finetune_train"] == 4 * (20 + 40) * 2  # 4 recipes x sizes x 2 epochs
    # one path through the stages: stage 0's two recipes and the winner's cxr13 recipe (3 recipes x 2 sizes)
    assert est.other_runs == 3 * 2
    # (both winners of stage 0 give 3 recipes, 2 of them not listed, 1 source: a tie, the first path wins)
    assert pc.stage_recipes(est.config, "emphysema", "path") == [
        "onecycle-finetune-none-default",
        "regular-finetune-none-default",
        "onecycle-finetune-cxr13-transfer",
    ]
    assert any("regular-schedule runs counted at their most epochs (2)" in n for n in pc.notes(est.config, est.jobs, 0))


def test_split_sizes_precedence(tmp_path):
    manifest = tmp_path / "results" / "splits" / "t" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    counts = {"train": {"images": 70}, "val": {"images": 20}, "test": {"images": 10}}
    manifest.write_text(json.dumps({"counts": counts}))
    need = {"t": {"val", "test"}, "cxr14": {"val", "test"}}
    sizes, origin = pc.resolve_sizes(need, given={"t": {"val": 5}}, manifests=tmp_path, paper=True)
    assert sizes == {"t": {"val": 5, "test": 10}, "cxr14": {"val": 8_650, "test": 25_596}}
    assert origin["t"]["val"] == "given" and origin["t"]["test"].startswith("manifest")
    assert origin["cxr14"] == {"val": "paper estimate", "test": "paper estimate"}
    made = pc.resolve_sizes({"u": {"val"}}, split_counts=lambda tasks: {t: {"val": 3} for t in tasks})
    assert made == ({"u": {"val": 3}}, {"u": {"val": "split made here"}})
    with pytest.raises(SystemExit, match=r"split sizes unknown \(u: test, val\)"):
        pc.resolve_sizes({"u": {"val", "test"}})


@pytest.mark.parametrize("n", [2, 15, 16, 17, 33, 40, 2000])
def test_batch_sizes_as_training_draws_them(n):
    from smalldl.train import make_batches

    batches = make_batches(n, 16, np.random.default_rng(0))
    assert pc.batch_sizes(n, 16) == [len(b) for b in batches]
    assert pc.lr_finder_images(n, 16, 100) == sum(len(b) for b in (batches * 100)[:100])
