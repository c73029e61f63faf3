import pytest

from smalldl import jobs
from smalldl.errors import InputError


def test_generate_bad_params_name_the_argument_and_leave_nothing(tmp_path):
    out = tmp_path / "raw" / "chest"
    with pytest.raises(InputError, match="n_patients"):
        jobs.generate("synthetic_chest", {"n_patients": 0}, out, seed=0)
    with pytest.raises(InputError, match="colour"):
        jobs.generate("synthetic_chest", {"colour": "red"}, out, seed=0)
    assert not out.exists() and not list(tmp_path.rglob("*.partial"))


def test_generate_then_index_and_cache(tmp_path):
    out = tmp_path / "raw" / "limb"
    jobs.generate("synthetic_limb", {"n_patients": 6, "image_size": 32}, out, seed=3)
    table = jobs.make_index(out / "index.csv", tmp_path / "index.parquet")
    assert len(table) >= 6 and {"study_type", "abnormal"} <= set(table.columns)
    jobs.make_cache(tmp_path / "index.parquet", tmp_path / "c.npy", tmp_path / "c.json", 16, None, 1)
    assert (tmp_path / "c.npy").stat().st_size > 16 * 16 * len(table)
