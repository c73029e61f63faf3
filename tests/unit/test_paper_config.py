"""configs/paper.yaml, as Snakemake builds the study from it (the file over the schema's defaults, never
over the demo's config.yaml): every value the paper or the authors' code specifies, pinned, each with
where it comes from. "PAPER.md" is the paper's text (docs/DESIGN.md summarises it); "code:" the authors'
published code, github.com/r0mer0m/DL-Medical-Images."""

import re
from pathlib import Path

import pytest
import yaml

from smalldl import config as cfg

from ..conftest import dry_run

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "configs" / "paper.yaml"

NIH_14 = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]  # fmt: skip

#: (key path, value, where it comes from)
PINNED = [
    # pre-processing and augmentation
    ("preprocess.width", 250, "PAPER.md: resize to width 250"),
    ("preprocess.aspect", None, "PAPER.md: the most common aspect ratio kept"),
    ("train.crop", 236, "PAPER.md: random crop 236x236"),
    ("train.flip", True, "PAPER.md: random horizontal flip p=0.5"),
    ("train.rotate", 10, "PAPER.md: rotation uniform in +-10 degrees"),
    ("train.tta", 4, "PAPER.md: the original plus 4 augmented copies"),
    # training
    ("train.epochs", 20, "PAPER.md: a fixed number of epochs (20)"),
    ("train.batch_size", 16, "code: BATCH_SIZE = 16 in every script"),
    ("train.lr_finder.enabled", True, "PAPER.md: max_lr from the lr finder"),
    ("train.lr_finder.rule", "minimum", "PAPER.md: the lr at which the loss is minimal"),
    ("train.lr_finder.size", 2000, "PAPER.md: hyper-parameters tuned at 2000 training images"),
    ("train.lr_finder.start_lr", 1e-7, "code: multilabel_disease_deep_learning_app1.ipynb, min_lr=1e-7"),
    ("train.lr_finder.end_lr", 10, "code: the same notebook, max_lr=10"),
    ("train.pct_start", 0.3, "PAPER.md: cut = ceil(0.3 max_iter)"),
    ("train.div_factor", 25, "PAPER.md: f(i; max_lr/25 -> max_lr)"),
    ("train.final_div", 25000, "PAPER.md: f(i - cut; max_lr -> max_lr/25000)"),
    ("train.moms", [0.95, 0.85], "PAPER.md: momentum 0.95 -> 0.85 -> 0.95"),
    ("train.plateau_factor", 0.1, "PAPER.md: regular training divides the lr by 10 on a plateau"),
    ("train.min_lr_ratio", 0.001, "code: training_methods/*.py stop below 1e-6 with max_lr 1e-3"),
    ("train.group_lr_divs", [9, 3, 1], "PAPER.md: group 3 the schedule, group 2 /3, group 1 /9"),
    ("train.unfreeze_at", [0.2, 0.1], "PAPER.md: group 2 unfrozen after 10%, group 1 after 20%"),
    ("train.frozen_bn", "adapt", "code: train_functions.py calls model.train() on the whole model"),
    # source pretraining (code: transfer_learning_dataset/13disease_upstream_resnet50.py)
    ("pretrain.epochs", 10, "code: EPOCHS = 10"),
    ("pretrain.batch_size", 16, "code: BATCH_SIZE = 16"),
    ("pretrain.max_lr", 0.001, "code: max_lr=.001"),
    ("pretrain.crop", 236, "as train.crop (PAPER.md)"),
    ("pretrain.group_lr_divs", [9, 3, 1], "code: alpha 1/3, lr/9, lr/3, lr"),
    ("pretrain.unfreeze_at", [0.2, 0.1], "code: unfreeze_during_loop=(.1, .2)"),
    ("pretrain.final_div", 25000, "PAPER.md's one-cycle"),
    ("pretrain.frozen_bn", "adapt", "code: model.train() on the whole model"),
    ("sources.imagenet.weights", "imagenet", "PAPER.md: ImageNet source"),
    ("sources.cxr13.recipe", "onecycle-gradual-imagenet-transfer", "code: PRETRAINED = True # ImageNet, gradual"),
    ("sources.cxr13.targets", ["emphysema"], "PAPER.md Fig. 6; code: only emphysema-downstream.py uses it"),
    ("sources.chexpert.recipe", "onecycle-gradual-imagenet-transfer", "code: chexpert_upstream.ipynb"),
    ("sources.mura.recipe", "onecycle-gradual-imagenet-transfer", "as the other sources (MURA's code unpublished)"),
    ("tasks.cxr13.labels", [c for c in NIH_14 if c != "Emphysema"], "PAPER.md: the 14 labels minus Emphysema"),
    ("tasks.cxr13.exclude_positive", ["Emphysema"], "PAPER.md: images negative for Emphysema"),
    ("tasks.cxr13.exclude_patients_of", ["emphysema"], "PAPER.md: no overlap with the Emphysema target"),
    ("tasks.cxr13.max_images", 75000, "PAPER.md: ~75k images"),
    (
        "tasks.chexpert5.labels",
        ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"],
        "PAPER.md: the 5 classes used",
    ),
    ("tasks.chexpert5.val_fraction", 0.1, "code: chexpert_upstream.ipynb moves 10% of train to validation"),
    ("tasks.mura.labels", ["abnormal"], "PAPER.md: normal/abnormal"),
    # targets
    ("study.targets", ["cxr14", "pneumonia", "emphysema", "hernia"], "PAPER.md: the four targets"),
    ("tasks.cxr14.labels", NIH_14, "PAPER.md: ChestX-ray14, 14 labels"),
    ("tasks.cxr14.type", "multilabel", "PAPER.md: mean AUC over labels"),
    ("tasks.pneumonia.labels", ["Pneumonia"], "PAPER.md"),
    ("tasks.emphysema.labels", ["Emphysema"], "PAPER.md"),
    ("tasks.hernia.labels", ["Hernia"], "PAPER.md"),
    ("tasks.emphysema.balance", True, "PAPER.md: balanced val/test, every positive kept"),
    ("tasks.emphysema.positives_shortfall", "fill", "PAPER.md bug list: never upsample positives"),
    ("study.archs", ["densenet121", "resnet50"], "PAPER.md: DenseNet121 (main), ResNet50 (check)"),
    ("study.stages.start", "onecycle-finetune-none-default", "code: training_methods/*.py, PRETRAINED = False"),
    (
        "study.stages.vary",
        [
            {"axis": "schedule", "values": ["onecycle", "regular"], "set": {}},
            {"axis": "transfer", "values": ["extractor", "finetune", "gradual"], "set": {"source": "imagenet"}},
            {"axis": "source", "values": ["none", "imagenet", "cxr13", "chexpert", "mura"], "set": {}},
            {"axis": "init", "values": ["transfer", "moments", "momentsconv"], "set": {"source": "imagenet"}},
        ],
        "PAPER.md: stage-wise; code: transfer_learning_methods (ImageNet), distribution_transfer_learning "
        "(moments of ImageNet)",
    ),
    ("study.sizes", [50, 100, 200, 500, 1000, 1500, 2000], "PAPER.md: sizes 50-2000 (a departure, marked)"),
    # radiomics
    ("radiomics.featuresets", ["paper79"], "PAPER.md: the 79 features"),
    ("radiomics.models", ["l1", "l2", "elasticnet", "rf"], "PAPER.md: L1, L2, elastic net, random forest"),
    ("radiomics.cv_folds", 5, "PAPER.md: tuned by cross validation (code: LogisticRegressionCV(cv=5))"),
    ("radiomics.n_iter", 20, "PAPER.md: random search"),
    # results
    ("results.target_auc", 0.8, "PAPER.md: how much data is needed; Emphysema reaches AUC 0.8 with 50 images"),
]

#: Values that depart from the paper: each line of paper.yaml that sets one says so after "# paper:".
DEPARTURES = ["optimizer", "weight_decay", "seeds", "sizes", "rotate"]


def get(config, path):
    for key in path.split("."):
        config = config[key]
    return config


@pytest.fixture(scope="module")
def paper():
    return cfg.load(PAPER)


@pytest.mark.parametrize("path, value, origin", PINNED, ids=[p[0] for p in PINNED])
def test_the_paper_config_holds_the_paper_value(paper, path, value, origin):
    assert get(paper, path) == value, f"{path}: {origin}"


def test_every_departure_from_the_paper_is_marked_in_the_file():
    lines = PAPER.read_text().splitlines()
    for key in DEPARTURES:
        setting = [line for line in lines if re.match(rf"\s*{key}:", line)]
        assert setting, key
        for line in setting:
            assert "# paper:" in line, f"configs/paper.yaml: {line.strip()!r} departs from the paper unmarked"


def test_no_value_of_the_demo_reaches_the_paper_config(paper):
    """The paper's study is the file over the schema's defaults: no key the demo sets and the paper file
    does not (its synthetic datasets, the demo's radiomics search, its pretraining max_lr) appears."""
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert not set(demo["datasets"]) & set(paper["datasets"])
    assert paper["radiomics"]["models"] != demo["radiomics"]["models"]
    assert paper["pretrain"]["max_lr"] == 0.001 != demo["pretrain"]["max_lr"]
    assert "fractal" not in paper["sources"] and "fractal" not in paper["tasks"]


def test_snakemake_with_a_configfile_does_not_merge_the_demo(tmp_path):
    """A study naming its own config file plans only its own jobs: no synthetic stand-in generated, no
    demo source pretrained, the schema's defaults (not the demo's values) filled in."""
    own = tmp_path / "own.yaml"
    own.write_text(
        "datasets: {mine: {kind: fractal, params: {n_categories: 2, images_per_category: 10, image_size: 32}}}\n"
        "tasks: {shapes: {dataset: mine, type: multilabel, labels: [category]}}\n"
        "study: {targets: [shapes], recipes: [onecycle-finetune-none-default], sizes: [8], seeds: [0]}\n"
        "train: {lr_finder: {enabled: false}}\n"
    )
    out = dry_run(tmp_path, own)
    assert "synth_chest" not in out and "pretrain" not in out and "radiomics" not in out
    assert re.search(r"^generate_synthetic\s+1\s*$", out, re.M)  # the user's dataset only
    assert "wildcards: dataset=mine" in out
    # the schema's defaults, not the demo's: densenet121 at width 250
    assert "arch=densenet121" in out and "w250.npy" in out
