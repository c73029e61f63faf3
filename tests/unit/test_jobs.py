import pytest

from smalldl.errors import InputError
from smalldl.jobs import data as data_jobs


def test_generate_bad_params_name_the_argument_and_leave_nothing(tmp_path):
    out = tmp_path / "raw" / "chest"
    with pytest.raises(InputError, match="n_patients"):
        data_jobs.generate_synthetic(
            dataset={"kind": "synthetic_chest", "params": {"n_patients": 0}}, out_dir=out, seed=0
        )
    with pytest.raises(InputError, match="colour"):
        data_jobs.generate_synthetic(
            dataset={"kind": "synthetic_chest", "params": {"colour": "red"}}, out_dir=out, seed=0
        )
    assert not out.exists() and not list(tmp_path.rglob("*.partial"))


def test_generate_then_index_and_cache(tmp_path):
    out = tmp_path / "raw" / "limb"
    data_jobs.generate_synthetic(
        dataset={"kind": "synthetic_limb", "params": {"n_patients": 6, "image_size": 32}}, out_dir=out, seed=3
    )
    table = data_jobs.index(
        dataset_name="synthetic", dataset={"kind": "synthetic_chest"}, raw=out, out_parquet=tmp_path / "index.parquet"
    )
    assert len(table) >= 6 and {"study_type", "abnormal"} <= set(table.columns)
    data_jobs.cache(
        index_parquet=tmp_path / "index.parquet",
        out_npy=tmp_path / "c.npy",
        out_meta=tmp_path / "c.json",
        width=16,
        aspect=None,
        workers=1,
    )
    assert (tmp_path / "c.npy").stat().st_size > 16 * 16 * len(table)


def test_cache_job_names_the_dataset_key_of_a_too_large_or_too_small_image(tmp_path):
    import pandas as pd
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for name, size in [("ok.png", (64, 64)), ("big.png", (200, 100))]:
        Image.new("L", size, 90).save(tmp_path / "imgs" / name)
    table = pd.DataFrame({"image_id": ["a", "b"], "path": [str(tmp_path / "imgs" / n) for n in ("ok.png", "big.png")]})
    table.to_parquet(tmp_path / "index.parquet")
    kw = dict(index_parquet=tmp_path / "index.parquet", out_npy=tmp_path / "c.npy", out_meta=tmp_path / "c.json")
    with pytest.raises(InputError, match=r"big\.png is 200x100 = 20,000 pixels, .*\(datasets\.scans\.max_pixels"):
        data_jobs.cache(**kw, width=16, aspect=1.0, dataset_name="scans", max_pixels=10_000)
    small = r"ok\.png is 64x64 pixels: its shorter side 64 is below preprocess\.min_side = 80 "
    with pytest.raises(InputError, match=small):
        data_jobs.cache(**kw, width=16, aspect=1.0, dataset_name="scans", min_side=80)
    assert not (tmp_path / "c.npy").exists()
    data_jobs.cache(**kw, width=16, aspect=1.0, dataset_name="scans", max_pixels=20_000, min_side=64)
    assert (tmp_path / "c.npy").exists()
