"""Downloads from a local HTTP server on 127.0.0.1 (Range support, cut transfers, corrupt files), safe
extraction, and the NIH ChestX-ray14 fetch (download or verify a local copy) on a small fixture release."""

import hashlib
import io
import json
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from smalldl.data import download as dl
from smalldl.data.sources import nih
from smalldl.errors import InputError
from smalldl.jobs import data as data_jobs

# ------------------------------------------------------------------------------------- local server


class FileServer:
    """A threaded in-process HTTP server: ``files`` name -> bytes, ``Range: bytes=N-`` answered with 206,
    ``cuts[name]`` = byte counts after which successive responses are cut off, ``log`` of requests."""

    def __init__(self, files=None):
        self.files = dict(files or {})
        self.cuts: dict[str, list[int]] = {}
        self.content_type: dict[str, str] = {}
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.log.append((name, rng))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", server.content_type.get(name, "application/octet-stream"))
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server.cuts.get(name)
                if cut:
                    self.wfile.write(data[start : start + cut.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (what offline looks like: connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def md5(data):
    return "md5:" + hashlib.md5(data).hexdigest()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


# ------------------------------------------------------------------------------------------ download


def test_a_transfer_cut_short_resumes_with_a_range_request(tmp_path):
    with FileServer({"a.bin": PAYLOAD}) as srv:
        srv.cuts["a.bin"] = [120_000, 50_000]  # two broken connections, then the rest
        got = dl.download(
            f"{srv.url}/a.bin", tmp_path / "a.bin", size=len(PAYLOAD), checksums=[md5(PAYLOAD)], backoff=0
        )
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD and got == md5(PAYLOAD)
    assert srv.log == [("a.bin", None), ("a.bin", "bytes=120000-"), ("a.bin", "bytes=170000-")]
    assert not (tmp_path / "a.bin.part").exists()


def test_a_part_file_left_by_a_killed_job_is_resumed_not_refetched(tmp_path, capsys):
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:200_000])
    with FileServer({"a.bin": PAYLOAD}) as srv:
        dl.download(f"{srv.url}/a.bin", tmp_path / "a.bin", checksums=[sha256(PAYLOAD)], progress_every=0)
    assert srv.log == [("a.bin", "bytes=200000-")]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    err = capsys.readouterr().err
    assert "resuming at 200000 bytes" in err and "MiB" in err  # progress lines in the log


def test_a_corrupted_file_fails_its_checksum_and_leaves_nothing(tmp_path):
    bad = bytearray(PAYLOAD)
    bad[1000] ^= 0xFF
    with FileServer({"a.bin": bytes(bad)}) as srv:
        with pytest.raises(InputError, match=r"a\.bin.*checksum mismatch \(expected md5 .*; found md5 "):
            dl.download(f"{srv.url}/a.bin", tmp_path / "a.bin", checksums=[md5(PAYLOAD)], backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_offline_fails_at_once_saying_what_to_place_where(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"cannot download a\.bin .*Connection refused.*place it in /x/"):
        dl.download(f"{closed_port_url()}/a.bin", tmp_path / "a.bin", offline_hint="place it in /x/", backoff=5)
    assert time.monotonic() - t0 < 3  # no retry loop when nothing was ever received
    assert list(tmp_path.iterdir()) == []


def test_a_web_page_instead_of_the_file_is_refused(tmp_path):
    with FileServer({"a.bin": b"<html>log in</html>"}) as srv:
        srv.content_type["a.bin"] = "text/html; charset=utf-8"
        with pytest.raises(InputError, match="returned a web page"):
            dl.download(f"{srv.url}/a.bin", tmp_path / "a.bin")


def test_checksum_parsing_and_verify_messages(tmp_path):
    assert dl.parse_checksum("MD5:" + "a" * 32) == ("md5", "a" * 32)
    with pytest.raises(InputError, match="not a checksum"):
        dl.parse_checksum("crc:12")
    with pytest.raises(InputError, match="wrong length"):
        dl.parse_checksum("sha256:abcd")
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert dl.verify_file(f, 3, ["md5:" + "0" * 32, sha256(b"abc")]) == sha256(b"abc")  # any one matches
    with pytest.raises(InputError, match=r"size 3 bytes, expected 4"):
        dl.verify_file(f, 4)


# ---------------------------------------------------------------------------------------- extraction


def tar_bytes(members):
    """members: (name, bytes | None for a directory | ('sym'|'hard', target))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "sym" else tarfile.LNKTYPE
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    "members, why",
    [
        ([("images/ok.png", b"x"), ("../evil.txt", b"x")], "outside the destination"),
        ([("images/ok.png", b"x"), ("/tmp/evil.txt", b"x")], "outside the destination"),
        ([("images/ok.png", b"x"), ("images/link", ("sym", "/etc/passwd"))], "is a link"),
        ([("images/ok.png", b"x"), ("images/hard", ("hard", "images/ok.png"))], "is a link"),
    ],
)
def test_extraction_refuses_traversal_and_links_and_writes_nothing(tmp_path, members, why):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_bytes(members))
    dest = tmp_path / "out"
    with pytest.raises(InputError, match=why):
        dl.safe_extract(archive, dest)
    assert list(dest.iterdir()) == []  # not even the safe member before it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "out"]


def test_extraction_of_zip_refuses_traversal_and_extracts_good_archives(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok.txt", "x")
        zf.writestr("../../evil.txt", "x")
    with pytest.raises(InputError, match="outside the destination"):
        dl.safe_extract(evil, tmp_path / "z")
    assert list((tmp_path / "z").iterdir()) == []
    good = tmp_path / "good.tar.gz"
    good.write_bytes(tar_bytes([("images", None), ("images/a.png", b"1"), ("images/b.png", b"22")]))
    assert sorted(dl.safe_extract(good, tmp_path / "g")) == ["images/a.png", "images/b.png"]
    assert (tmp_path / "g" / "images" / "b.png").read_bytes() == b"22"
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(InputError, match="cannot be extracted"):
        dl.safe_extract(truncated, tmp_path / "c")


# ------------------------------------------------------------------------------ NIH fixture release

ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Sex,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def png_bytes(rng, size=40):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_nih_release(n_patients=60, seed=0):
    """A ChestX-ray14 look-alike: name -> bytes of the 12 archives and 4 metadata files, plus the
    labels table. Patient p is Emphysema-positive when p % 3 == 0; patients with p % 4 == 0 are the
    official test set."""
    rng = np.random.default_rng(seed)
    rows, images = [], {}
    for p in range(1, n_patients + 1):
        for j in range(1 + p % 3):
            name = f"{p:08d}_{j:03d}.png"
            found = [lab for lab in nih.LABELS if lab != "Emphysema" and rng.random() < 0.15]
            if p % 3 == 0:
                found.append("Emphysema")
            rows.append((name, "|".join(found) or "No Finding", j, p, "PA" if j % 2 == 0 else "AP"))
            images[name] = png_bytes(rng)
    names = sorted(images)
    files = {}
    for k, archive in enumerate(nih.ARCHIVES):
        members = [(f"images/{n}", images[n]) for n in names[k::12]]
        files[archive] = tar_bytes([("images", None), *members])
    entry = [ENTRY_HEADER] + [f"{n},{f},{j},{p},50,M,{v},1024,1024,0.14,0.14" for n, f, j, p, v in rows]
    files[nih.ENTRY] = ("\n".join(entry) + "\n").encode()
    files[nih.BBOX] = b"Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000003_000.png,Emphysema,1,2,3,4\n"
    test = [n for n, _f, _j, p, _v in rows if p % 4 == 0]
    files[nih.TEST] = ("\n".join(test) + "\n").encode()
    files[nih.TRAIN_VAL] = ("\n".join(n for n in names if n not in set(test)) + "\n").encode()
    return files, rows


def nih_params(files, url, **extra):
    return {"download": True, "base_url": url, "checksums": {n: sha256(b) for n, b in files.items()}, **extra}


def test_nih_download_resumes_verifies_extracts_and_indexes(tmp_path, capsys):
    files, rows = make_nih_release()
    out = tmp_path / "raw" / "nih" / "fetched.json"
    with FileServer(files) as srv:
        srv.cuts["images_003.tar.gz"] = [len(files["images_003.tar.gz"]) // 2]
        info = data_jobs.fetch_nih(
            dataset_name="nih", dataset={"kind": "nih", "params": nih_params(files, srv.url)}, out_json=out, backoff=0
        )
    requested = [name for name, _ in srv.log]
    assert sorted(set(requested)) == sorted(files) and requested.count("images_003.tar.gz") == 2
    assert ("images_003.tar.gz", f"bytes={len(files['images_003.tar.gz']) // 2}-") in srv.log
    root = tmp_path / "raw" / "nih"
    assert info["images"] == len(rows) == len(list((root / "images").glob("*.png")))
    assert not list(root.glob("images_*.tar.gz"))  # archives removed after extraction (keep_archives: false)
    assert json.loads(out.read_text())["files"][nih.ENTRY]["checksum"] == sha256(files[nih.ENTRY])
    table = data_jobs.index(
        dataset_name="nih", dataset={"kind": "nih"}, out_parquet=tmp_path / "index.parquet", fetched=out
    )
    assert len(table) == len(rows) and list(table.columns[:4]) == ["image_id", "patient_id", "path", "view"]
    assert list(table.columns[4:18]) == list(nih.LABELS)
    assert (table["official_split"] == "test").sum() == sum(p % 4 == 0 for *_x, p, _v in rows)
    emph = table.set_index("image_id")["Emphysema"]
    assert all(emph[n] == int(p % 3 == 0) for n, _f, _j, p, _v in rows)
    assert "download images_001.tar.gz:" in capsys.readouterr().err
    # a second fetch (forced rerun) downloads nothing: files verified, archives marked extracted
    with FileServer(files) as srv2:
        data_jobs.fetch_nih(
            dataset_name="nih", dataset={"kind": "nih", "params": nih_params(files, srv2.url)}, out_json=out
        )
    assert srv2.log == []


def test_nih_corrupted_archive_fails_naming_it_and_no_record_is_written(tmp_path):
    files, _ = make_nih_release()
    params = nih_params(files, None)
    bad = dict(files)
    bad["images_007.tar.gz"] = files["images_007.tar.gz"][:-10] + b"0123456789"
    out = tmp_path / "raw" / "nih" / "fetched.json"
    with FileServer(bad) as srv:
        params["base_url"] = srv.url
        with pytest.raises(InputError, match=r"images_007\.tar\.gz.*checksum mismatch"):
            data_jobs.fetch_nih(dataset_name="nih", dataset={"kind": "nih", "params": params}, out_json=out, backoff=0)
    assert not out.exists()
    assert not (tmp_path / "raw" / "nih" / "images_007.tar.gz").exists()
    assert not (tmp_path / "raw" / "nih" / "images_007.tar.gz.part").exists()


def test_nih_local_copy_is_verified_in_place_and_nothing_is_downloaded(tmp_path):
    files, rows = make_nih_release()
    copy = tmp_path / "ChestX-ray14"
    (copy / "images").mkdir(parents=True)
    for name, data in files.items():
        if name in nih.METADATA:
            (copy / name).write_bytes(data)
        else:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        (copy / m.name).write_bytes(tar.extractfile(m).read())
    params = nih_params(files, closed_port_url(), path=str(copy), download=False)
    out = tmp_path / "raw" / "nih" / "fetched.json"
    info = data_jobs.fetch_nih(dataset_name="nih", dataset={"kind": "nih", "params": params}, out_json=out)
    assert info["root"] == str(copy) and info["images"] == len(rows)
    assert sorted(p.name for p in out.parent.iterdir()) == ["fetched.json"]  # no copy in raw/
    table = data_jobs.index(
        dataset_name="nih", dataset={"kind": "nih"}, out_parquet=tmp_path / "i.parquet", fetched=out
    )
    assert all(p.startswith(str(copy / "images")) for p in table["path"])
    # a local file with the wrong content is named
    (copy / nih.TEST).write_bytes(files[nih.TEST] + b"00000001_000.png\n")
    with pytest.raises(InputError, match=r"test_list\.txt: .*checksum mismatch"):
        data_jobs.fetch_nih(dataset_name="nih", dataset={"kind": "nih", "params": params}, out_json=out)
    # a missing image is named
    (copy / nih.TEST).write_bytes(files[nih.TEST])
    (copy / "images" / "00000005_000.png").unlink()
    with pytest.raises(InputError, match=r"1 image\(s\) listed in .*Data_Entry_2017_v2020\.csv .*00000005_000\.png"):
        data_jobs.fetch_nih(dataset_name="nih", dataset={"kind": "nih", "params": params}, out_json=out)
    assert not out.exists()


def test_nih_offline_or_download_off_says_what_to_place_where(tmp_path):
    out = tmp_path / "raw" / "nih" / "fetched.json"
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"cannot download Data_Entry_2017_v2020\.csv .*place them in .*raw/nih/"):
        data_jobs.fetch_nih(
            dataset_name="nih",
            dataset={"kind": "nih", "params": {"download": True, "base_url": closed_port_url()}},
            out_json=out,
        )
    assert time.monotonic() - t0 < 5
    with pytest.raises(
        InputError, match=r"16 file\(s\) missing in .*raw/nih: Data_Entry_2017_v2020\.csv, .*download: true"
    ):
        data_jobs.fetch_nih(dataset_name="nih", dataset={"kind": "nih", "params": {"download": False}}, out_json=out)
    with pytest.raises(InputError, match=r"params\.path: folder /nonexistent/cxr14 does not exist"):
        data_jobs.fetch_nih(
            dataset_name="nih", dataset={"kind": "nih", "params": {"path": "/nonexistent/cxr14"}}, out_json=out
        )
    assert not out.exists()


def test_recorded_nih_checksums_and_overrides():
    assert len(nih.ARCHIVES) == 12 and set(nih.METADATA) < set(nih.FILES)
    for name in nih.ARCHIVES:
        remote = nih.FILES[name]
        assert remote.url.startswith("https://nihcc.box.com/shared/static/") and remote.size > 2_000_000_000
        assert dl.parse_checksum(remote.checksums[0])[0] == "md5"
    assert sum(nih.FILES[n].size for n in nih.ARCHIVES) > 45_000_000_000
    remotes = nih.remote_files({"base_url": "http://m/", "checksums": {nih.TEST: "md5:" + "1" * 32}})
    assert remotes[nih.TEST] == nih.Remote("http://m/test_list.txt", None, ("md5:" + "1" * 32,))
    assert remotes["images_001.tar.gz"].size == nih.FILES["images_001.tar.gz"].size
    with pytest.raises(InputError, match="'nope.csv' is not a file of the release"):
        nih.remote_files({"urls": {"nope.csv": "http://x"}})


def test_nih_metadata_errors_name_the_row(tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_text(ENTRY_HEADER + "\na.png,Emphysema|Flu,0,1,5,M,PA,1,1,1,1\n")
    with pytest.raises(InputError, match=r"e\.csv, line 2: unknown finding 'Flu'"):
        nih.read_entries(csv)
    csv.write_text(ENTRY_HEADER + "\na.png,Emphysema,0,1,5,M,PA,1,1,1,1\na.png,Hernia,0,1,5,M,PA,1,1,1,1\n")
    with pytest.raises(InputError, match=r"line 3: duplicate image 'a\.png'"):
        nih.read_entries(csv)
    pd.DataFrame({"Image Index": ["a.png"], "Finding Labels": ["Hernia"]}).to_csv(csv, index=False)
    with pytest.raises(InputError, match=r"e\.csv: missing column\(s\) Patient ID, View Position"):
        nih.read_entries(csv)
    table = pd.DataFrame({"image_id": ["a.png", "b.png"]})
    with pytest.raises(InputError, match=r"image a\.png is in both"):
        nih.official_split(table, ["a.png"], ["a.png", "b.png"], "x")
    with pytest.raises(InputError, match=r"image b\.png is in neither"):
        nih.official_split(table, ["a.png"], [], "x")
