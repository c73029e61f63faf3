import numpy as np
import pandas as pd
import pytest

from smalldl.data import splits
from smalldl.errors import InputError

TASK = {
    "type": "binary",
    "labels": ["Emphysema"],
    "val_fraction": 0.1,
    "test_fraction": 0.2,
    "balance": True,
    "max_val_images": None,
    "max_test_images": None,
    "exclude_positive": [],
    "exclude_patients_of": [],
    "max_images": None,
}


def make_index(n_patients=400, per_patient=3, prevalence=0.15, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        sick = rng.random() < prevalence  # patient-level finding
        for k in range(rng.integers(1, per_patient + 1)):
            rows.append(
                {
                    "image_id": f"i{p}_{k}",
                    "patient_id": f"P{p}",
                    "path": "x",
                    "view": "PA",
                    "Emphysema": int(sick),
                    "Hernia": int(rng.random() < 0.05),
                }
            )
    return pd.DataFrame(rows)


def split_of(index=None, task=TASK, seed=7):
    index = make_index() if index is None else index
    table = splits.task_table(index, "emphysema", task, seed=seed)
    return splits.make_split(table, "emphysema", task, seed, "chest")


def test_patient_level_and_balanced_eval_sets_keep_every_positive():
    split, manifest = split_of()
    assert (split.groupby("patient_id")["split"].nunique() == 1).all()
    for name in ("val", "test"):
        part = split[split["split"] == name]
        used = part[part["selected"]]
        assert used["Emphysema"].sum() == part["Emphysema"].sum()  # every positive kept
        assert (used["Emphysema"] == 0).sum() == used["Emphysema"].sum()  # balanced
        assert manifest["counts"][name]["positives"]["Emphysema"] == used["Emphysema"].sum()
    assert set(manifest["seeds"]) == {"global", "patients", "select"}


def test_split_is_reproducible_and_seed_dependent():
    a, _ = split_of(seed=7)
    b, _ = split_of(seed=7)
    c, _ = split_of(seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])


def test_subsets_are_nested_balanced_and_reproducible():
    split, _ = split_of()
    prev = None
    for n in (10, 20, 40, 80):
        sub, info = splits.draw_subset(split, "emphysema", TASK, n, seed=1, global_seed=7)
        assert len(sub) == n and sub["image_id"].is_unique
        assert set(sub["image_id"]) <= set(split.loc[split["split"] == "train", "image_id"])
        if prev is not None:
            assert set(prev["image_id"]) <= set(sub["image_id"])
        assert sub["Emphysema"].sum() == n // 2 and info["positives_short"] == 0
        prev = sub
    again, _ = splits.draw_subset(split, "emphysema", TASK, 80, seed=1, global_seed=7)
    pd.testing.assert_frame_equal(prev, again)
    other, _ = splits.draw_subset(split, "emphysema", TASK, 80, seed=2, global_seed=7)
    assert set(other["image_id"]) != set(prev["image_id"])


def test_positive_shortfall_is_explicit_never_duplicated():
    split, _ = split_of(make_index(prevalence=0.03))
    pool = split[(split["split"] == "train")]
    n = 2 * int(pool["Emphysema"].sum()) + 20
    sub, info = splits.draw_subset(split, "emphysema", TASK, n, seed=0, global_seed=7)
    assert sub["image_id"].is_unique
    assert info["positives"] == pool["Emphysema"].sum()
    assert info["positives_short"] == n // 2 - info["positives"] > 0


def test_too_large_n_and_missing_positives_are_clear_errors():
    split, _ = split_of()
    with pytest.raises(InputError, match="n=100000 is larger than the training pool"):
        splits.draw_subset(split, "emphysema", TASK, 100000, seed=0, global_seed=7)
    index = make_index()
    index["Emphysema"] = 0
    with pytest.raises(InputError, match="no positive Emphysema images in the (train|val|test) split"):
        split_of(index)


def test_exclusions_drop_positives_and_patients_of_other_tasks():
    index = make_index()
    split, _ = split_of(index)
    sub, _ = splits.draw_subset(split, "emphysema", TASK, 40, seed=0, global_seed=7)
    used = splits.used_patients(split, [sub])
    source = {
        **TASK,
        "type": "multilabel",
        "labels": ["Hernia"],
        "exclude_positive": ["Emphysema"],
        "test_fraction": 0.0,
    }
    table = splits.task_table(index, "cxr13", source, excluded_patients=used, seed=7)
    assert not set(table["patient_id"]) & used
    assert index.set_index("image_id").loc[table["image_id"], "Emphysema"].sum() == 0
    tested = split[(split["split"] == "test") & split["selected"]]
    assert set(tested["patient_id"]) <= used and set(sub["patient_id"]) <= used
    # only the patients whose images the target uses; scope "split": every val/test patient as well
    unsampled = set(split.loc[split["split"].isin(["val", "test"]), "patient_id"]) - set(
        split.loc[split["split"].isin(["val", "test"]) & split["selected"], "patient_id"]
    )
    assert unsampled and not unsampled & (used - set(sub["patient_id"]))
    strict = splits.used_patients(split, [sub], scope="split")
    assert strict == used | unsampled


def test_label_columns_are_checked():
    index = make_index()
    with pytest.raises(InputError, match="label column\\(s\\) Nodule not in the index"):
        splits.task_table(index, "t", {**TASK, "labels": ["Nodule"]})
    index.loc[3, "Emphysema"] = 2
    with pytest.raises(InputError, match="has a label other than 0/1"):
        splits.task_table(index, "t", TASK)
