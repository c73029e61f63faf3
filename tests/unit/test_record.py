"""The run record: metrics.json of both families from one type, and the summary's columns from it."""

import json
from dataclasses import fields

import pytest

from smalldl.errors import InputError
from smalldl.record import (
    DERIVED,
    REQUIRED,
    RUN_KEYS,
    SUMMARY_LEAD,
    BestChoice,
    CnnFields,
    RadiomicsFields,
    RunRecord,
)
from smalldl.results.summary import read_metrics

COMMON = {
    "task": "emph",
    "n": 50,
    "seed": 0,
    "run_seed": 7,
    "task_type": "binary",
    "labels": ["Emphysema"],
    "n_train": 50,
    "n_val": 20,
    "n_test": 30,
    "train_positives": {"Emphysema": 25},
    "val_auc": 0.7,
    "val_loss": 0.6,
    "val_auc_per_label": {"Emphysema": 0.7},
    "test_auc": 0.65,
    "test_loss": 0.62,
    "test_auc_per_label": {"Emphysema": 0.65},
    "wall_time_s": 3.0,
    "device": "cpu",
    "python": "3.11",
    "threads": 2,
}


def cnn_record():
    return RunRecord(
        family="cnn", arch="smallcnn", recipe="onecycle-finetune-none-default", schedule="onecycle",
        transfer="finetune", source="none", init="default", val_auc_tta=0.71, test_auc_tta=0.66,
        test_auc_per_label_tta={"Emphysema": 0.66}, tta_views=4, selected_epoch=3, epochs=6, max_lr=0.002,
        steps=24, images_per_s=100.0, torch="2.14.1",
        cnn=CnnFields(selected_state_sha256="ab" * 32, epochs_run=6, lr_source="config", init_info={"init": "default"}),
        **COMMON,
    )  # fmt: skip


def radiomics_record(model="l2", val_auc=0.7):
    return RunRecord(
        family="radiomics", arch="radiomics_paper79", recipe=model,
        radiomics=RadiomicsFields(
            featureset="paper79", model=model, n_features=79, cv_auc=0.68, cv_auc_per_label={"Emphysema": 0.68},
            cv_folds=3, n_iter=10, best_params={"Emphysema": {"C": 1.0}}, fit_status={"Emphysema": "ok"},
            convergence_warnings=0, features="results/radiomics/x-paper79.parquet", sklearn="1.7",
        ),
        **{**COMMON, "val_auc": val_auc},
    )  # fmt: skip


def test_each_family_writes_its_own_keys_and_reads_back_the_same_record():
    cnn, rad = cnn_record(), radiomics_record()
    cnn_json, rad_json = cnn.to_json(), rad.to_json()
    assert {"selected_state_sha256", "epochs_run", "lr_source", "init_info"} <= set(cnn_json)
    assert not {"featureset", "model", "cv_auc", "sklearn"} & set(cnn_json)
    assert {"featureset", "model", "cv_auc", "best_params", "sklearn"} <= set(rad_json)
    assert not {"selected_state_sha256", "lr_source", "chosen_model"} & set(rad_json)
    assert rad_json["schedule"] is None and rad_json["tta_views"] == 0 and rad_json["torch"] is None
    for record in (cnn, rad):
        text = json.loads(json.dumps(record.to_json()))
        assert RunRecord.from_json(text) == record
        assert set(REQUIRED) <= set(text)


def test_the_best_radiomics_model_keeps_the_chosen_record_and_says_why():
    best = radiomics_record("rf", 0.8).chosen_as_best(
        "results/runs/emph/radiomics_paper79/rf/n50/s0", {"l2": 0.7, "rf": 0.8}
    )
    out = best.to_json()
    assert out["recipe"] == out["model"] == "best" and out["chosen_model"] == "rf" and out["selected_on"] == "val_auc"
    assert out["candidates_val_auc"] == {"l2": 0.7, "rf": 0.8} and out["test_auc"] == 0.65
    assert RunRecord.from_json(out).radiomics.choice == BestChoice("rf", out["chosen_run"], {"l2": 0.7, "rf": 0.8})
    with pytest.raises(ValueError, match="only a radiomics run"):
        cnn_record().chosen_as_best("x", {})


def test_a_record_with_an_unknown_or_missing_key_is_refused_by_name():
    data = cnn_record().to_json()
    with pytest.raises(InputError, match="run metrics m.json: unknown key.*colour"):
        RunRecord.from_json({**data, "colour": "red"}, where="run metrics m.json")
    del data["test_loss"]
    with pytest.raises(InputError, match="not a run record.*test_loss"):
        RunRecord.from_json(data)
    with pytest.raises(ValueError, match="exactly its own part"):
        RunRecord(family="cnn", arch="a", recipe="r", radiomics=radiomics_record().radiomics, **COMMON)


def test_the_summary_columns_come_from_the_record(tmp_path):
    names = {f.name for kind in (RunRecord, CnnFields, RadiomicsFields) for f in fields(kind)}
    assert set(SUMMARY_LEAD) - set(DERIVED) <= names and set(RUN_KEYS) <= names
    paths = []
    for i, record in enumerate((cnn_record(), radiomics_record())):
        path = tmp_path / f"r{i}" / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps(record.to_json()))
        paths.append(path)
    table = read_metrics(paths)
    lead = [c for c in SUMMARY_LEAD if c in table.columns]
    assert list(table.columns[: len(lead)]) == lead == list(SUMMARY_LEAD)
    headline = dict(zip(table["family"], table["headline_auc"], strict=True))
    assert headline == {"cnn": 0.66, "radiomics": 0.65}  # TTA where the run has it, else plain
