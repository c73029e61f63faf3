import json
import math

import numpy as np
import pytest

from smalldl.utils import Progress, atomic_path, derive_seed, progress, write_json


def test_derive_seed_is_stable_and_key_sensitive():
    assert derive_seed(2021, "run", "emphysema", 50, 0) == derive_seed(2021, "run", "emphysema", 50, 0)
    assert derive_seed(2021, "run", "emphysema", 50, 0) != derive_seed(2021, "run", "emphysema", 50, 1)
    assert 0 <= derive_seed("x") < 2**31


def test_write_json_is_strict_json_and_atomic(tmp_path):
    write_json(
        tmp_path / "m.json",
        {"auc": math.nan, "x": np.float32(0.5), "per": [np.int64(3), math.inf], "a": np.array([1.0, np.nan])},
    )
    expected = {"auc": None, "x": 0.5, "per": [3, None], "a": [1.0, None]}
    assert json.loads((tmp_path / "m.json").read_text()) == expected
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "half.txt") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_progress_prints_lines_with_counts(capsys):
    assert list(progress(range(5), desc="gen", unit="img", every=0)) == list(range(5))
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("gen: 5/5 (100%)") and "img/s" in lines[-1]


def test_progress_in_blocks_ends_on_a_full_count(capsys):
    tracker = Progress(10, desc="cache", unit="img", every=1e9)
    for block in (4, 4, 2):
        tracker.update(block)
    tracker.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cache: 10/10 (100%)")
