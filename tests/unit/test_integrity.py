"""Intermediate files are checked against what their producer wrote when a job reads them (issue 27): a
truncated or rewritten cache, split table or run's predictions is one line naming the file and the command
that rebuilds it, never numpy's or pyarrow's traceback naming no file."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from smalldl.data import cache as cache_mod
from smalldl.errors import InputError
from smalldl.utils import read_table


@pytest.fixture
def cache(tmp_path):
    rows = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.new("L", (40, 40), color=40 * i).save(path)
        rows.append({"image_id": str(i), "path": str(path)})
    npy, meta = tmp_path / "cache" / "w32.npy", tmp_path / "cache" / "w32.json"
    cache_mod.build_cache(pd.DataFrame(rows), npy, meta, width=32, aspect=1.0)
    return npy, meta


def one_line_naming(info, path):
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path} is damaged (")
    assert f"snakemake --forcerun {path}" in message
    return message


def test_an_intact_cache_opens(cache):
    arr, info = cache_mod.open_cache(*cache)
    assert arr.shape == (6, 32, 32) and info["n"] == 6


def test_a_truncated_cache_is_one_line_naming_it_and_the_repair(cache):
    npy, meta = cache
    with open(npy, "r+b") as fh:
        fh.truncate(npy.stat().st_size - 100)
    with pytest.raises(InputError) as info:
        cache_mod.open_cache(npy, meta)
    assert "bytes" in one_line_naming(info, npy)


def test_a_rewritten_cache_of_the_same_size_is_caught_by_its_sample_hash(cache):
    npy, meta = cache
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0xFF
    npy.write_bytes(bytes(data))
    with pytest.raises(InputError) as info:
        cache_mod.open_cache(npy, meta)
    one_line_naming(info, npy)


def test_a_cache_of_another_shape_is_caught_without_the_recorded_size(cache):
    npy, meta = cache
    np.save(npy, np.zeros((5, 32, 32), np.uint8))
    text = re.sub(r'\s*"(bytes|sample_sha256)": [^,\n]+,?', "", meta.read_text())
    meta.write_text(text)  # a cache written before the size was recorded: the shape is still checked
    with pytest.raises(InputError) as info:
        cache_mod.open_cache(npy, meta)
    assert "records uint8 [6, 32, 32]" in one_line_naming(info, npy)


@pytest.mark.parametrize("name", ["split.parquet", "predictions.parquet"])
def test_a_truncated_table_is_one_line_naming_it_and_the_repair(tmp_path, name):
    path = tmp_path / name
    pd.DataFrame({"image_id": ["a", "b"], "y_x": [0, 1], "p_x": [0.1, 0.9]}).to_parquet(path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(InputError) as info:
        read_table(path)
    one_line_naming(info, path)


def test_a_run_s_damaged_predictions_name_the_file_and_the_repair(tmp_path):
    from smalldl.results.intervals import run_scores

    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.parquet").write_bytes(b"PAR1 not a table")
    with pytest.raises(InputError) as info:
        run_scores({"path": str(run)})
    one_line_naming(info, run / "predictions.parquet")


def split_of_a_small_chest_study(tmp_path):
    """The split job's own split.parquet of a small synthetic dataset (index job, then split job)."""
    from smalldl.jobs import data as data_jobs
    from smalldl.jobs import splits as split_jobs

    from .test_sources import split_task

    raw = tmp_path / "raw"
    data_jobs.generate_synthetic(
        dataset={
            "kind": "synthetic_chest",
            "params": {"n_patients": 30, "image_size": 32, "prevalence": {"Emphysema": 0.4}},
        },
        out_dir=raw,
        seed=3,
    )
    data_jobs.index(
        dataset_name="chest", dataset={"kind": "synthetic_chest"}, raw=raw, out_parquet=tmp_path / "i.parquet"
    )
    task = split_task(dataset="chest", labels=["Emphysema"], balance=False)
    out = tmp_path / "s" / "split.parquet"
    split_jobs.split(
        task_name="t",
        task=task,
        global_seed=3,
        index_parquet=tmp_path / "i.parquet",
        excluded_from=[],
        out_split=out,
        out_manifest=tmp_path / "s" / "manifest.json",
    )
    return out, task


def test_a_split_rewritten_with_one_label_flipped_is_caught_by_the_record_its_producer_wrote(tmp_path):
    from smalldl.jobs import splits as split_jobs

    path, task = split_of_a_small_chest_study(tmp_path)
    intact = read_table(path)
    assert len(read_table(path, columns=["image_id"])) == len(intact)
    flipped = pd.read_parquet(path)  # a valid parquet file, as pandas writes it, one label flipped
    flipped.loc[0, "Emphysema"] = 1 - flipped.loc[0, "Emphysema"]
    flipped.to_parquet(path, index=False)
    with pytest.raises(InputError) as info:
        read_table(path)
    assert "column(s) Emphysema differ from what its producer wrote" in one_line_naming(info, path)
    with pytest.raises(InputError) as info:  # the subset job, a reader of the split, stops with that line
        split_jobs.subset(
            task_name="t",
            task=task,
            global_seed=3,
            split_parquet=path,
            n=4,
            seed=0,
            out_csv=tmp_path / "sub.csv",
            out_json=tmp_path / "sub.json",
        )
    one_line_naming(info, path)
    flipped.iloc[:-1].to_parquet(path, index=False)  # a row dropped: the record's row count
    with pytest.raises(InputError) as info:
        read_table(path)
    assert f"{len(intact) - 1} rows, its producer wrote {len(intact)}" in one_line_naming(info, path)


def test_a_run_s_predictions_rewritten_with_one_score_changed_are_caught(tmp_path):
    from smalldl.utils import write_parquet

    path = tmp_path / "predictions.parquet"
    write_parquet(pd.DataFrame({"image_id": ["a", "b"], "y_x": [0, 1], "p_x": [0.1, 0.9]}), path)
    assert read_table(path)["p_x"].tolist() == [0.1, 0.9]
    preds = pd.read_parquet(path)
    preds.loc[1, "p_x"] = 0.2
    preds.to_parquet(path, index=False)
    with pytest.raises(InputError) as info:
        read_table(path)
    assert "column(s) p_x differ" in one_line_naming(info, path)


@pytest.mark.parametrize("where", ["download", "path"])
def test_the_chestxray14_metadata_are_inputs_of_the_index_downloaded_or_local(tmp_path, monkeypatch, where):
    """The metadata files of ChestX-ray14 are what its index is read from: inputs of the index job, whether
    fetch_nih downloaded them into resources/raw/<name>/ (its only output is the fetch record) or they are a
    local copy, so that a replaced Data_Entry CSV or split list reruns the index."""
    from smalldl.data import pool as pool_mod
    from smalldl.data.sources import nih

    monkeypatch.chdir(tmp_path)
    root = Path("resources/raw/nih") if where == "download" else tmp_path / "copy"
    root.mkdir(parents=True)
    for name in (nih.ENTRY, nih.TRAIN_VAL, nih.TEST):
        (root / name).write_text("x\n")
    params = {"download": True} if where == "download" else {"path": str(root)}
    assert pool_mod.source_files("nih", {"kind": "nih", "params": params}) == [
        str(root / name) for name in (nih.ENTRY, nih.TRAIN_VAL, nih.TEST)
    ]


def test_the_index_job_records_its_images_and_a_replaced_one_is_named_with_the_repair(tmp_path, capsys, monkeypatch):
    """The images of a public dataset are not inputs Snakemake stats at every DAG build: the index job
    records them (resources/index/<dataset>.files.tsv) and ``python -m smalldl.data.manifest`` (by default
    on resources/index/) says which index is older than its images, with the command that reruns it."""
    import io
    import os

    from smalldl.data import manifest
    from smalldl.jobs import data as data_jobs

    raw = tmp_path / "raw"
    data_jobs.generate_synthetic(
        dataset={"kind": "synthetic_chest", "params": {"n_patients": 6, "image_size": 32}}, out_dir=raw, seed=3
    )
    index = tmp_path / "resources" / "index" / "chest.parquet"
    index.parent.mkdir(parents=True)
    table = data_jobs.index(dataset_name="chest", dataset={"kind": "synthetic_chest"}, raw=raw, out_parquet=index)
    rows = manifest.read_manifest(index.with_name("chest.files.tsv"))
    assert [r[0] for r in rows] == table["path"].astype(str).tolist()
    assert manifest.check([index], out=io.StringIO()) == 0 and manifest.main([str(index.parent)]) == 0
    image = Path(table["path"].iloc[2])
    Image.new("L", (32, 32), color=0).save(image)  # overwritten with a black image
    os.utime(image, ns=(rows[2][2] + 10**9, rows[2][2] + 10**9))  # even within the file system's mtime step
    out = io.StringIO()
    assert manifest.check([index], out=out) == 1
    line = out.getvalue().strip()
    assert "\n" not in line and line.startswith(f"{index}: 1 image(s) changed since it was built (first: {image})")
    assert f"snakemake --forcerun {index}" in line
    capsys.readouterr()
    assert manifest.main([str(index.parent)]) == 1 and f"--forcerun {index}" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)  # no path: the study's indexes, in the working directory
    stale = "--forcerun resources/index/chest.parquet"
    assert manifest.main([]) == 1 and stale in capsys.readouterr().out
    image.unlink()  # a removed image is a change too
    assert manifest.changed_files(index.with_name("chest.files.tsv")) == [str(image)]


def test_a_training_subset_edited_after_its_job_is_caught_by_its_recorded_sha256(tmp_path):
    """The subset job writes its CSV with a SHA-256 beside it (``<csv>.sha256``); its readers (fine-tuning,
    radiomics, a split that avoids its patients) stop with one line naming it and the repair when the CSV
    is not what was written. A CSV without the record (by hand, an older smalldl) is read as it is."""
    from smalldl.utils import write_csv

    path = tmp_path / "train_n4_s0.csv"
    table = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "patient_id": ["1", "1", "2", "3"], "y": [0, 1, 0, 1]})
    write_csv(table, path)
    assert (tmp_path / "train_n4_s0.csv.sha256").read_text().endswith("  train_n4_s0.csv\n")
    pd.testing.assert_frame_equal(read_table(path, dtype={"image_id": str, "patient_id": str}), table)
    path.write_text(path.read_text().replace("d,3,1", "d,3,0"))  # one label flipped by hand
    with pytest.raises(InputError) as info:
        read_table(path)
    assert "its SHA-256 differs from what its producer recorded" in one_line_naming(info, path)
    (tmp_path / "train_n4_s0.csv.sha256").unlink()
    assert read_table(path)["y"].tolist() == [0, 1, 0, 0]


def test_the_stamp_of_a_public_dataset_s_images_is_old_until_one_changes(tmp_path):
    """smalldl.data.manifest.mark, what the main Snakemake process calls at each DAG build: the stamp (an
    input of the index job) is the epoch while the images match the manifest, now (with other content)
    when one changed, and the epoch again once it is restored."""
    import os

    from smalldl.data import manifest

    images = [tmp_path / f"{i}.png" for i in range(3)]
    for i, image in enumerate(images):
        Image.new("L", (8, 8), color=i).save(image)
    index = tmp_path / "index" / "d.parquet"
    stamp = manifest.stamp_path(index)
    assert manifest.mark(index) is None and stamp.stat().st_mtime_ns == 0  # no index yet
    index.parent.mkdir(exist_ok=True)
    index.write_bytes(b"x")
    manifest.write_manifest(map(str, images), manifest.manifest_path(index))
    assert manifest.mark(index) is None and stamp.stat().st_mtime_ns == 0
    quiet = stamp.read_text()
    saved = images[1].read_bytes(), images[1].stat()
    Image.new("L", (8, 8), color=99).save(images[1])
    os.utime(images[1], ns=(saved[1].st_atime_ns, saved[1].st_mtime_ns + 10**9))
    line = manifest.mark(index)
    assert line.startswith(f"{index}: 1 image(s) changed since it was built (first: {images[1]})")
    assert stamp.stat().st_mtime_ns > index.stat().st_mtime_ns and stamp.read_text() != quiet
    images[1].write_bytes(saved[0])
    os.utime(images[1], ns=(saved[1].st_atime_ns, saved[1].st_mtime_ns))
    assert manifest.mark(index) is None and stamp.stat().st_mtime_ns == 0 and stamp.read_text() == quiet
