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


def write_pngs(root, sizes):
    """One PNG per (width, height) in ``root/images`` and the index table of them."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(np.full((h, w), 100 + i, dtype=np.uint8)).save(root / "images" / f"{i}.png")
        rows.append({"image_id": f"img{i}", "patient_id": f"p{i}", "path": str(root / "images" / f"{i}.png")})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("aspect", [None, 1.0])  # refused on the header pass, or by a decode worker
def test_an_image_over_max_pixels_is_refused_naming_it_its_pixels_and_the_key(tmp_path, aspect):
    import yaml

    from smalldl.data.limits import DEFAULT_MAX_PIXELS, ImageLimits

    from ..conftest import ROOT

    schema = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
    dataset = schema["properties"]["datasets"]["additionalProperties"]["properties"]
    assert dataset["max_pixels"]["default"] == DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS  # PIL's default

    limits = ImageLimits(dataset="mine", max_pixels=10_000)
    over = write_pngs(tmp_path / "a", [(100, 100)] * 3 + [(101, 100)] + [(100, 100)] * 3)  # one just over
    with pytest.raises(InputError) as info:
        cache.build_cache(
            over, tmp_path / "c.npy", tmp_path / "c.json", width=32, aspect=aspect, workers=2, chunk=2, limits=limits
        )
    message = str(info.value)
    assert "3.png is 101x100 = 10,100 pixels, over the limit of 10,000 (datasets.mine.max_pixels" in message
    assert "raise datasets.mine.max_pixels if the image is genuine" in message
    # over twice the limit PIL itself refuses to open it (its DecompressionBombError): the same message
    bomb = write_pngs(tmp_path / "b", [(100, 100), (300, 100)])
    with pytest.raises(InputError, match=r"1\.png is 30,000 pixels, over the limit of 10,000 \(datasets\.mine\."):
        cache.build_cache(bomb, tmp_path / "c.npy", tmp_path / "c.json", width=32, aspect=aspect, limits=limits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no cache, no partial
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS  # PIL's limit is the dataset's only while it opens
    just = ImageLimits(dataset="mine", max_pixels=10_100)
    cache.build_cache(over, tmp_path / "c.npy", tmp_path / "c.json", width=32, aspect=aspect, limits=just)
    assert np.load(tmp_path / "c.npy").shape == (7, 32, 32)


@pytest.mark.parametrize("size", [(1, 1), (20, 300)])
@pytest.mark.parametrize("aspect", [None, 1.0])
def test_an_image_with_a_side_below_min_side_is_refused_by_name(tmp_path, size, aspect):
    table = write_pngs(tmp_path / "ds", [(64, 64), (64, 64), size, (64, 64)])
    w, h = size
    with pytest.raises(InputError) as info:
        cache.build_cache(table, tmp_path / "c.npy", tmp_path / "c.json", width=32, aspect=aspect)  # default 32
    assert str(info.value).startswith(
        f"image {table['path'][2]} is {w}x{h} pixels: its shorter side {min(w, h)} is below preprocess.min_side = 32"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    lower = cache.ImageLimits(min_side=min(w, h))
    cache.build_cache(table, tmp_path / "c.npy", tmp_path / "c.json", width=32, aspect=aspect, limits=lower)
    assert np.load(tmp_path / "c.npy").shape[0] == 4


DECODE_PEAK = """
import re, sys
import numpy as np
sys.path.insert(0, {root!r})
from smalldl.data import cache, dicom
def peak_rss():  # VmHWM: this process's peak (ru_maxrss would start from the parent's, pytest's)
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmHWM:\\s*(\\d+) kB", fh.read()).group(1)) * 1024
cache.read_grey({small!r})  # every import and lazy import done: what follows is the image's
base = peak_rss()
out = cache.read_grey({path!r})
print(peak_rss() - base)
np.save({out!r}, out)
"""


def _dicom_16bit(path, arr, photometric, window):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 12, 11, 0, 1
    ds.PhotometricInterpretation = photometric
    ds.RescaleSlope, ds.RescaleIntercept = 1.5, -1024
    if window:
        ds.WindowCenter, ds.WindowWidth = 1000, 3000
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_wide_images_are_scaled_in_bands_within_a_workers_memory_to_the_same_bytes(tmp_path):
    """A 16-bit 4000x4000 image (PNG, big-endian TIFF, DICOM with rescale and window, MONOCHROME1 without
    one): the worker's peak above its interpreter stays within WORKER_BYTES_PER_PIXEL (the cache rule's
    mem_mb; an 8-bit RGB PNG too), not a float64 copy of the image per temporary (27 bytes a pixel
    before); the output is the whole-image formula's, byte for byte."""
    import subprocess
    import sys

    from smalldl.data import dicom
    from smalldl.data.limits import WORKER_BYTES_PER_PIXEL

    from ..conftest import ROOT

    n = 4000
    y, x = np.mgrid[0:n, 0:n]
    arr = ((x * 3 + y * 2 + (x * y) % 97) % 4096).astype(np.uint16)  # 12 bits, compresses fast
    Image.fromarray(arr).save(tmp_path / "w16.png", compress_level=1)
    Image.frombytes("I;16B", (n, n), arr.astype(">u2").tobytes()).save(tmp_path / "w16b.tif")
    _dicom_16bit(tmp_path / "win.dcm", arr, "MONOCHROME2", window=True)
    _dicom_16bit(tmp_path / "inv.dcm", arr, "MONOCHROME1", window=False)
    rgb = np.stack([arr >> 4, arr >> 5, 255 - (arr >> 4)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png", compress_level=1)  # 8-bit: the path as it was, for mem_mb
    Image.fromarray(np.full((64, 64), 7, dtype=np.uint16)).save(tmp_path / "small.png")

    lo, hi = float(arr.min()), float(arr.max())
    minmax = np.round((arr.astype(np.float64) - lo) / (hi - lo) * 255.0).astype(np.uint8)
    hu = arr.astype(np.float64) * 1.5 - 1024
    hu_minmax = np.round((hu - hu.min()) / (hu.max() - hu.min()) * 255.0).astype(np.uint8)
    expected = {
        "w16.png": minmax,
        "w16b.tif": minmax,
        "win.dcm": dicom.window_to_uint8(hu, 1000, 3000),
        "inv.dcm": 255 - hu_minmax,
        "rgb.png": np.asarray(Image.fromarray(rgb).convert("L")),
    }
    for name, want in expected.items():
        code = DECODE_PEAK.format(
            root=str(ROOT), small=str(tmp_path / "small.png"), path=str(tmp_path / name), out=str(tmp_path / "o.npy")
        )
        peak = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        assert peak < WORKER_BYTES_PER_PIXEL * n * n, f"{name}: {peak / n / n:.1f} bytes a pixel"
        np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), want, err_msg=name)


def test_too_little_disk_for_the_cache_is_one_line_before_decoding(tmp_path, monkeypatch):
    import shutil

    table = index.read_raw_index(write_dataset(tmp_path / "ds", [(40, 40)] * 4))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    decoded = []
    real = cache.load_resized
    monkeypatch.setattr(cache, "load_resized", lambda *a: decoded.append(a[0]) or real(*a))
    with pytest.raises(InputError) as info:  # not a worker killed by SIGBUS when the sparse memmap fills the disk
        cache.build_cache(table, tmp_path / "c.npy", tmp_path / "c.json", width=32, aspect=1.0)
    assert str(info.value).startswith(f"cache {tmp_path / 'c.npy'} needs 4.0 KiB more but 1000 B is free in ")
    assert decoded == [] and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
