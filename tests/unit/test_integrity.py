"""Intermediate files are checked against what their producer wrote when a job reads them (issue 27): a
truncated or rewritten cache, split table or run's predictions is one line naming the file and the command
that rebuilds it, never numpy's or pyarrow's traceback naming no file."""

import re

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
