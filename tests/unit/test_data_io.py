import numpy as np
import pandas as pd
import pytest
from PIL import Image

from smalldl.data import cache, index
from smalldl.errors import InputError


def write_dataset(root, shapes):
    (root / "images").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(shapes):
        arr = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        Image.fromarray(arr).save(root / "images" / f"{i}.png")
        rows.append(
            {"image_id": f"img{i}", "patient_id": f"p{i // 2}", "path": f"images/{i}.png", "view": "PA", "label": i % 2}
        )
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    return root / "index.csv"


def test_index_resolves_paths_and_checks_rows(tmp_path):
    csv = write_dataset(tmp_path / "ds", [(40, 40)] * 4)
    table = index.read_raw_index(csv)
    assert list(table.columns[:4]) == ["image_id", "patient_id", "path", "view"]
    assert all(p.startswith(str(tmp_path)) for p in table["path"])

    bad = pd.read_csv(csv)
    bad.loc[2, "image_id"] = "img0"
    bad.to_csv(csv, index=False)
    with pytest.raises(InputError, match=r"line 4: duplicate image_id 'img0'"):
        index.read_raw_index(csv)

    bad.drop(columns=["patient_id"]).to_csv(csv, index=False)
    with pytest.raises(InputError, match="missing column\\(s\\) patient_id"):
        index.read_raw_index(csv)

    good = write_dataset(tmp_path / "ds2", [(40, 40)] * 3)
    (tmp_path / "ds2" / "images" / "1.png").unlink()
    with pytest.raises(InputError, match=r"line 3: image .*1\.png does not exist"):
        index.read_raw_index(good)


def test_cache_resizes_to_width_keeps_most_common_aspect(tmp_path):
    csv = write_dataset(tmp_path / "ds", [(80, 40), (80, 40), (80, 40), (40, 40), (120, 40)])
    table = index.read_raw_index(csv)
    meta = cache.build_cache(table, tmp_path / "c.npy", tmp_path / "c.json", width=20)
    arr, info = cache.open_cache(tmp_path / "c.npy", tmp_path / "c.json")
    assert arr.shape == (5, 40, 20) and arr.dtype == np.uint8  # aspect 2 is the commonest
    assert meta["aspect"] == 2.0 and info["image_ids"] == list(table["image_id"])
    for i, p in enumerate(table["path"]):
        np.testing.assert_array_equal(arr[i], cache.load_resized(p, 20, 40))
    square = cache.load_resized(table["path"][3], 20, 40)  # 20x20 centred, zero padded
    assert (square[:10] == 0).all() and (square[30:] == 0).all()
    np.testing.assert_array_equal(cache.rows_for(info, ["img4", "img0"]), [4, 0])
    with pytest.raises(InputError, match="image_id 'nope' is not in the cache"):
        cache.rows_for(info, ["nope"])


def test_parallel_cache_equals_serial(tmp_path, capsys):
    csv = write_dataset(tmp_path / "ds", [(50, 50)] * 70)
    table = index.read_raw_index(csv)
    cache.build_cache(table, tmp_path / "a.npy", tmp_path / "a.json", width=16, workers=1, chunk=16)
    cache.build_cache(table, tmp_path / "b.npy", tmp_path / "b.json", width=16, workers=2, chunk=16)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    final = [line for line in capsys.readouterr().err.splitlines() if "70/70 (100%)" in line]
    assert len(final) == 2  # each build logs its full count


def test_corrupt_image_names_the_file_and_leaves_no_cache(tmp_path):
    csv = write_dataset(tmp_path / "ds", [(40, 40)] * 4)
    target = tmp_path / "ds" / "images" / "2.png"
    target.write_bytes(target.read_bytes()[:60])  # truncated PNG
    table = index.read_raw_index(csv)
    with pytest.raises(InputError, match=r"image .*2\.png cannot be decoded"):
        cache.build_cache(table, tmp_path / "c.npy", tmp_path / "c.json", width=16, aspect=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


KILLED_BUILD = """
import sys, time
sys.path.insert(0, {root!r})
import pandas as pd
from smalldl.data import cache
slow = cache.load_resized
def load_slowly(*a):
    time.sleep(0.01)
    return slow(*a)
cache.load_resized = load_slowly
cache.build_cache(pd.read_parquet({index!r}), {npy!r}, {meta!r}, width=16, workers=1, chunk=10)
"""


def test_cache_resumes_after_a_kill_and_restarts_when_the_input_changed(tmp_path, monkeypatch):
    import json
    import signal
    import subprocess
    import sys
    import time

    from ..conftest import ROOT

    csv = write_dataset(tmp_path / "ds", [(40, 40)] * 300)
    table = index.read_raw_index(csv)
    table.to_parquet(tmp_path / "index.parquet")
    npy, meta = tmp_path / "c" / "w16.npy", tmp_path / "c" / "w16.json"
    state = tmp_path / "c" / ".w16.npy.partial.json"
    code = KILLED_BUILD.format(root=str(ROOT), index=str(tmp_path / "index.parquet"), npy=str(npy), meta=str(meta))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and len(json.loads(state.read_text())["done"]) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not npy.exists() and state.exists()
    done = len(json.loads(state.read_text())["done"])
    assert 5 <= done < 30

    calls = []
    real = cache.load_resized
    monkeypatch.setattr(cache, "load_resized", lambda *a: calls.append(a[0]) or real(*a))
    cache.build_cache(table, npy, meta, width=16, workers=1, chunk=10)
    assert len(calls) == 300 - 10 * done  # only the chunks the killed build had not finished
    fresh = tmp_path / "fresh.npy"
    cache.build_cache(table, fresh, tmp_path / "fresh.json", width=16, workers=2, chunk=10)
    np.testing.assert_array_equal(np.load(npy), np.load(fresh))
    assert sorted(p.name for p in npy.parent.iterdir()) == ["w16.json", "w16.npy"]  # no leftovers

    # a partial build of another index (or size) is not reused
    (npy.parent / ".w8.npy.partial").write_bytes(b"stale")
    (npy.parent / ".w8.npy.partial.json").write_text('{"fingerprint": "other", "done": [0]}')
    calls.clear()
    cache.build_cache(table, npy.parent / "w8.npy", npy.parent / "w8.json", width=8, workers=1, chunk=10)
    assert len(calls) == 300
