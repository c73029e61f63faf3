import json
import math

import numpy as np
import pytest

from smalldl.utils import atomic_path, derive_seed, progress, write_json


def test_derive_seed_is_stable_and_key_sensitive():
    assert derive_seed(2021, "run", "emphysema", 50, 0) == derive_seed(2021, "run", "emphysema", 50, 0)
    assert derive_seed(2021, "run", "emphysema", 50, 0) != derive_seed(2021, "run", "emphysema", 50, 1)
    assert 0 <= derive_seed("x") < 2**31


def test_write_json_is_strict_json_and_atomic(tmp_path):
    write_json(tmp_path / "m.json", {"auc": math.nan, "x": np.float32(0.5), "per": [np.int64(3), math.inf]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"auc": None, "x": 0.5, "per": [3, None]}
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "half.txt") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_progress_prints_lines_with_counts(capsys):
    assert list(progress(range(5), desc="gen", unit="img", every=0)) == list(range(5))
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("gen: 5/5 (100%)") and "img/s" in lines[-1]
