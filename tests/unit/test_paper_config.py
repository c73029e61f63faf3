"""configs/paper.yaml, as Snakemake builds the study from it (the file over the schema's defaults, never
over the demo's config.yaml): every value the paper or the authors' code specifies, pinned, each with
where it comes from. "PAPER.md" is the paper's text (docs/DESIGN.md summarises it); "code:" the authors'
published code, github.com/r0mer0m/DL-Medical-Images."""

import copy
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
    ("train.epochs", 20, "PAPER.md: a fixed number of epochs (20); each stage sets its own (study.stages.vary)"),
    ("train.max_lr", 0.001, "code: max_lr=.001 in every stage's script (used where the lr finder is off)"),
    ("train.amp", "off", "code: fp32 throughout, no autocast (train_functions.py)"),
    ("pretrain.amp", "off", "code: fp32 throughout (13diseases-upstream.ipynb)"),
    ("train.cpu_kernels", "off", "code: PyTorch's kernels (smalldl.kernels is demo speed, off by default)"),
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
    # source pretraining (code: transfer_learning_dataset/13diseases-upstream.ipynb; its script form
    # 13disease_upstream_resnet50.py, stored at commit ac2c7ea and not in the repository at HEAD)
    ("pretrain.epochs", 10, "code: EPOCHS = 10 (13diseases-upstream.ipynb)"),
    ("pretrain.batch_size", 16, "code: BATCH_SIZE = 16"),
    ("pretrain.max_lr", 0.001, "code: max_lr=.001 (13disease_upstream_resnet50.py at ac2c7ea)"),
    ("pretrain.crop", 236, "as train.crop (PAPER.md)"),
    ("pretrain.group_lr_divs", [9, 3, 1], "code: alpha 1/3, lr/9, lr/3, lr"),
    ("pretrain.unfreeze_at", [0.2, 0.1], "code: unfreeze_during_loop=(.1, .2)"),
    ("pretrain.final_div", 25000, "PAPER.md's one-cycle"),
    ("pretrain.frozen_bn", "adapt", "code: model.train() on the whole model"),
    ("sources.imagenet.weights", "imagenet", "PAPER.md: ImageNet source"),
    (
        "sources.imagenet.torchvision_weights",
        {"densenet121": "IMAGENET1K_V1", "resnet50": "IMAGENET1K_V1"},
        "the weights the authors' torchvision had (models.resnet50(pretrained=True), code: architectures.py); "
        "torchvision's DEFAULT for resnet50 is IMAGENET1K_V2 (2021)",
    ),
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
    ("tasks.hernia.positives_shortfall", "fill", "PAPER.md bug list: never upsample positives (marked)"),
    ("tasks.pneumonia.positives_shortfall", "fill", "PAPER.md bug list: never upsample positives (marked)"),
    ("study.archs", ["densenet121", "resnet50"], "PAPER.md: DenseNet121 (main), ResNet50 (check)"),
    ("study.stages.start", "onecycle-finetune-none-default", "code: training_methods/*.py, PRETRAINED = False"),
    (
        "study.stages.vary",
        [
            {"axis": "schedule", "values": ["onecycle", "regular"], "set": {}, "epochs": 10},
            {
                "axis": "transfer",
                "values": ["extractor", "finetune", "gradual"],
                "set": {"source": "imagenet"},
                "epochs": 10,
            },
            {"axis": "source", "values": ["none", "imagenet", "cxr13", "chexpert", "mura"], "set": {}, "epochs": 30},
            {
                "axis": "init",
                "values": ["transfer", "moments", "momentsconv"],
                "set": {"source": "imagenet"},
                "epochs": 20,
            },
        ],
        "PAPER.md: stage-wise; code: transfer_learning_methods (ImageNet), distribution_transfer_learning "
        "(moments of ImageNet); epochs: training_methods/*.py EPOCHS = 10, transfer_learning_methods/*.py "
        "EPOCHS = 10, transfer_learning_dataset/emphysema-downstream.py EPOCHS = 30, "
        "distribution_transfer_learning/emphysema.py EPOCHS = 20",
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
DEPARTURES = ["optimizer", "weight_decay", "seeds", "sizes", "rotate", "enabled", "archs", "positives_shortfall"]

#: Departures without a key of their own, each marked in a "# paper:" comment (with the words shown).
MARKED_IN_COMMENTS = {
    "cxr13's composition: drawn from all NIH images, the code from its training split only": "official test list",
    "regular training's plateau: not below the best so far, the code's rise over the previous epoch": "plateau",
    "max_lr: the lr finder (the paper), the code's fixed .001 (configs/paper-fixed-lr.yaml)": "max_lr=.001",
}


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


def test_departures_without_a_key_are_marked_in_a_comment():
    text = PAPER.read_text()
    blocks = re.findall(r"# paper:[^\n]*(?:\n\s*#[^\n]*)*", text)
    for what, words in MARKED_IN_COMMENTS.items():
        assert any(words in block for block in blocks), f"configs/paper.yaml: unmarked departure: {what}"


def test_the_pretraining_values_cite_a_file_of_the_authors_repository():
    """13disease_upstream_resnet50.py is not in the authors' repository at HEAD: the pretraining values
    cite the notebook that is (13diseases-upstream.ipynb), the script only with the commit that held it."""
    lines = PAPER.read_text().splitlines()
    assert any(line.startswith("pretrain:") and "13diseases-upstream.ipynb" in line for line in lines)
    for line in lines:
        if "13disease_upstream_resnet50.py" in line:
            assert "ac2c7ea" in line or "ac2c7ea" in lines[lines.index(line) - 1], line


def test_the_paper_config_gets_resnet50_s_v1_imagenet_weights(paper):
    """The authors' torchvision had one set of ResNet50 weights (IMAGENET1K_V1); today's DEFAULT is V2."""
    from smalldl import models

    versions = paper["sources"]["imagenet"]["torchvision_weights"]
    assert models.torchvision_weights("resnet50", versions["resnet50"]).url.endswith("/resnet50-0676ba61.pth")
    assert models.torchvision_weights("resnet50").url.endswith("/resnet50-11ad3fa6.pth")  # V2: not the paper's
    assert models.torchvision_weights("densenet121", versions["densenet121"]).name == "IMAGENET1K_V1"


def test_each_stage_trains_for_the_authors_epochs(paper):
    """The candidates of each stage, the previous winner included, train for that stage's epochs; the
    finetune job's settings (its params) carry them."""
    first = cfg.stage_candidates(paper, 0, None, "hernia")
    assert first == ["onecycle-finetune-none-default-e10", "regular-finetune-none-default-e10"]
    assert cfg.recipe_settings(paper, first[1])["epochs"] == 10
    sources = cfg.stage_candidates(paper, 2, "onecycle-gradual-imagenet-transfer-e10", "emphysema")
    assert "onecycle-gradual-imagenet-transfer-e30" in sources and "onecycle-gradual-cxr13-transfer-e30" in sources
    inits = cfg.stage_candidates(paper, 3, "onecycle-gradual-cxr13-transfer-e30", "emphysema")
    assert inits[0] == "onecycle-gradual-imagenet-transfer"  # 20 epochs = train.epochs: the plain name
    assert cfg.recipe_settings(paper, inits[0])["epochs"] == 20


def test_the_fixed_lr_arm_is_the_paper_config_at_the_authors_max_lr():
    """configs/paper-fixed-lr.yaml over paper.yaml (snakemake --configfile configs/paper.yaml
    configs/paper-fixed-lr.yaml: Snakemake merges the files key by key): every stage at max_lr 1e-3, no
    lr finder (code: max_lr=.001 in every script), everything else paper.yaml's."""
    from snakemake.utils import update_config

    base = yaml.safe_load(PAPER.read_text())
    merged = copy.deepcopy(base)
    update_config(merged, yaml.safe_load((ROOT / "configs" / "paper-fixed-lr.yaml").read_text()))
    fixed, paper = cfg.validate(merged), cfg.validate(base)
    assert fixed["train"]["max_lr"] == 0.001 and fixed["train"]["lr_finder"]["enabled"] is False
    assert {k: v for k, v in fixed["train"].items() if k != "lr_finder"} == {
        k: v for k, v in paper["train"].items() if k != "lr_finder"
    }
    assert {k: v for k, v in fixed.items() if k != "train"} == {k: v for k, v in paper.items() if k != "train"}


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
