"""Stage-wise study: candidates vary one axis of the previous winner; winners are chosen on validation
AUC averaged over sizes and seeds, never on test AUC."""

import pytest

from smalldl import config as cfg
from smalldl.errors import InputError
from smalldl.stages import select_winner


def study(**stages):
    return {
        "study": {
            "stages": {
                "start": "onecycle-finetune-imagenet-transfer",
                "vary": [
                    {"axis": "schedule", "values": ["onecycle", "regular"]},
                    {"axis": "transfer", "values": ["extractor", "finetune", "gradual"]},
                    {"axis": "source", "values": ["none", "imagenet", "cxr13"]},
                    {"axis": "init", "values": ["transfer", "moments", "momentsconv"]},
                ],
                **stages,
            }
        }
    }


def test_candidates_vary_one_axis_of_the_previous_winner():
    c = study()
    assert cfg.stage_candidates(c, 0, None, "emph") == [
        "onecycle-finetune-imagenet-transfer",
        "regular-finetune-imagenet-transfer",
    ]
    assert cfg.stage_candidates(c, 1, "regular-finetune-imagenet-transfer", "emph") == [
        "regular-extractor-imagenet-transfer",
        "regular-finetune-imagenet-transfer",
        "regular-gradual-imagenet-transfer",
    ]
    # source none: transfer and init fall back to what scratch training means
    assert cfg.stage_candidates(c, 2, "onecycle-gradual-imagenet-transfer", "emph") == [
        "onecycle-finetune-none-default",
        "onecycle-gradual-imagenet-transfer",
        "onecycle-gradual-cxr13-transfer",
    ]
    # a scratch winner leaves nothing to vary in the init stage: one candidate
    assert cfg.stage_candidates(c, 3, "onecycle-finetune-none-default", "emph") == ["onecycle-finetune-none-default"]
    assert cfg.stage_candidates(c, 3, "onecycle-finetune-cxr13-transfer", "emph") == [
        "onecycle-finetune-cxr13-transfer",
        "onecycle-finetune-cxr13-moments",
        "onecycle-finetune-cxr13-momentsconv",
    ]


def test_winner_is_the_best_mean_validation_auc_and_test_auc_is_ignored():
    rows = [
        {"recipe": "a", "val_auc_tta": 0.70, "test_auc": 0.99, "test_auc_tta": 0.99},
        {"recipe": "a", "val_auc_tta": 0.72, "test_auc": 0.99, "test_auc_tta": 0.99},
        {"recipe": "b", "val_auc_tta": 0.80, "test_auc": 0.50, "test_auc_tta": 0.50},
        {"recipe": "b", "val_auc_tta": 0.60, "test_auc": 0.50, "test_auc_tta": 0.50},
        {"recipe": "c", "val_auc_tta": None, "val_auc": 0.75, "test_auc": 0.10},
    ]
    out = select_winner(rows, ["a", "b", "c"], "val_auc_tta")
    assert out["scores"] == pytest.approx({"a": 0.71, "b": 0.70, "c": 0.75})
    assert out["winner"] == "c" and out["runs"] == {"a": 2, "b": 2, "c": 1}
    assert select_winner(rows[:4], ["a", "b"], "val_auc_tta")["winner"] == "a"
    # ties go to the earlier candidate
    tie = [{"recipe": "x", "val_auc": 0.7}, {"recipe": "y", "val_auc": 0.7}]
    assert select_winner(tie, ["y", "x"], "val_auc")["winner"] == "y"
    with pytest.raises(ValueError, match="never on test"):
        select_winner(rows, ["a"], "test_auc")


def test_stage_config_is_checked():
    base = {
        "datasets": {"d": {"kind": "synthetic_chest"}},
        "tasks": {"t": {"dataset": "d", "type": "binary", "labels": ["Emphysema"]}},
        "sources": {"imagenet": {"weights": "imagenet"}},
        "study": {"targets": ["t"], "sizes": [10], "seeds": [0]},
    }
    ok = {**base, "study": {**base["study"], **study()["study"]}}
    ok["study"]["stages"]["vary"][2]["values"] = ["none", "imagenet"]
    cfg.validate(ok)
    assert ok["study"]["recipes"] == [] and ok["study"]["stages"]["select_on"] == "val_auc_tta"
    assert cfg.used_sources(ok) == ["imagenet"] and cfg.pretrained_sources(ok) == []
    bad = {**base, "study": {**base["study"], **study()["study"]}}
    with pytest.raises(InputError, match="cxr13"):
        cfg.validate(bad)  # cxr13 is not a configured source
    with pytest.raises(InputError, match="recipes, stages"):
        cfg.validate({**base, "study": {**base["study"], "recipes": []}})
    # neither recipes nor stages: the recipes that need no data beyond the study's (smalldl.config.default_recipes)
    assert cfg.validate({**base, "study": dict(base["study"])})["study"]["recipes"] == list(cfg.BASE_RECIPES)
    with pytest.raises(InputError, match="either 'task'"):
        cfg.validate(
            {**base, "sources": {"x": {}}, "study": {**base["study"], "recipes": ["onecycle-finetune-none-default"]}}
        )
