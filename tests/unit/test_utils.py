import json
import math
from pathlib import Path

import numpy as np
import pytest

from smalldl.utils import Progress, as_number, atomic_path, derive_seed, format_number, progress, write_json


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


def _fill_disk_after(nbytes):
    """A torch.save that writes ``nbytes`` into the file then fails as a full disk does."""
    import contextlib
    import errno

    def write(_obj, f):
        with contextlib.ExitStack() as stack:
            fh = stack.enter_context(open(f, "wb")) if isinstance(f, str | Path) else f
            fh.write(b"x" * nbytes)
            fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_a_full_disk_is_one_line_naming_the_file_and_the_free_space_and_leaves_no_tmp(tmp_path, monkeypatch):
    import contextlib
    import errno
    import shutil

    import torch

    from smalldl.errors import InputError
    from smalldl.models import save_source
    from smalldl.train import _save_checkpoint

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 2048, 2048))
    monkeypatch.setattr(torch, "save", _fill_disk_after(4096))
    run = tmp_path / "run"
    run.mkdir()
    for write, target in [
        (lambda p: _save_checkpoint(p, {"epoch": 1}), run / "resume.pt"),  # the checkpoint writer's call
        (lambda p: save_source(p, arch="smallcnn", body={}, meta={}), run / "source.pt"),
    ]:
        with pytest.raises(InputError) as info:  # one ERROR line in the rule's log, outputs removed
            write(target)
        message = str(info.value)
        assert "\n" not in message and str(target) in message
        assert "No space left on device" in message and "2.0 KiB free" in message and "4.0 KiB of it written" in message
        assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert list(run.iterdir()) == []  # no resume.pt, no .resume.pt.*.tmp

    def full(self, *a, **k):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(InputError, match=r"cannot write .*metrics\.json: Disk quota exceeded \(2\.0 KiB free in"):
        write_json(run / "metrics.json", {"auc": 0.5})
    # still an OSError: an optional write that tolerates one (formats.py's pin) tolerates a full disk
    with contextlib.suppress(OSError):
        write_json(run / "pin.json", {})
    assert list(run.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_outputs_take_the_umask_mode_as_any_other_tool(tmp_path, umask):
    import os

    from smalldl.train import _save_checkpoint

    old = os.umask(umask)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        _save_checkpoint(tmp_path / "resume.pt", {"epoch": 1})
        with atomic_path(tmp_path / "t.csv") as tmp:
            tmp.write_text("a\n1\n")
        (tmp_path / "plain.txt").write_text("x")  # what open() gives: the reference
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["m.json", "resume.pt", "t.csv", "plain.txt"], 0o666 & ~umask)


def test_the_manual_says_unlocking_after_a_killed_run_is_safe_and_why():
    from ..conftest import ROOT

    section = (ROOT / "docs" / "usage.md").read_text().split("\n## Resuming\n", 1)[1].split("\n## ", 1)[0]
    for needed in ("snakemake --unlock", "Directory cannot be locked", "atomically", "no partial output", "resume.pt"):
        assert needed in section, needed


def _torch_save_on_a_disk_that_fills_after(nbytes, context=True):
    """torch.save as it ends on a full disk: torch's zip writer's ``RuntimeError: [enforce fail at
    inline_container.cc:...] unexpected pos ...``, raised by the real torch.save while handling the file
    object's ENOSPC (``context``), or bare, as torch's own file writer raises it on a short write."""
    import errno
    import io

    import torch

    real_save = torch.save

    class Filling(io.RawIOBase):
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def writable(self):
            return True

        def write(self, b):
            if self.n + len(b) > nbytes:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.n += len(b)
            return self.fh.write(b)

    def save(obj, f):
        try:
            real_save(obj, io.BufferedWriter(Filling(f), buffer_size=64))
        except RuntimeError as exc:
            assert "unexpected pos" in str(exc) and "inline_container" in str(exc)  # torch's own message
            if context:
                raise
            raise RuntimeError(str(exc)) from None

    return save


@pytest.mark.parametrize("context", [True, False])
def test_torch_s_own_full_disk_error_is_the_one_line_message_too(tmp_path, monkeypatch, context):
    import errno
    import shutil

    import torch

    from smalldl.errors import DiskFullError
    from smalldl.utils import save_torch

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 2048, 2048))
    monkeypatch.setattr(torch, "save", _torch_save_on_a_disk_that_fills_after(1000, context))
    target = tmp_path / "run" / "resume.pt"
    with pytest.raises(DiskFullError) as info:
        save_torch({"w": torch.zeros(10_000)}, target)
    message = str(info.value)
    assert "\n" not in message and f"cannot write {target}: No space left on device (2.0 KiB free" in message
    assert info.value.errno == errno.ENOSPC
    assert list(target.parent.iterdir()) == []  # nothing partial: no resume.pt, no temporary file


def test_one_process_at_a_time_trains_into_a_run_folder(tmp_path):
    """A rerun of a job whose first process still trains (an orphan of a killed snakemake) stops with one
    line naming the run folder and the process holding it, before touching anything there (issue 27)."""
    import subprocess
    import sys

    from smalldl.errors import InputError
    from smalldl.jobs import train
    from smalldl.utils import LOCK_NAME, one_writer

    from ..conftest import ROOT

    run = tmp_path / "runs" / "t" / "smallcnn" / "onecycle-finetune-none-default" / "n20" / "s0"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from smalldl.utils import one_writer\n"
         "with one_writer(sys.argv[1], 'finetune'):\n    print('held', flush=True); time.sleep(60)",
         str(run / LOCK_NAME)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        paths = {k: tmp_path / k for k in ("cache_npy", "cache_meta", "split_parquet", "subset_csv")}
        with pytest.raises(InputError) as info:
            train.finetune(
                task_name="t", task={"type": "binary", "labels": ["x"]}, arch="smallcnn",
                recipe_name="onecycle-finetune-none-default", n=20, seed=0, settings={}, global_seed=0,
                source_ckpt=None, lr_json=None, out_metrics=run / "metrics.json",
                out_predictions=run / "predictions.parquet", out_val_predictions=run / "val_predictions.parquet",
                out_history=run / "history.csv", **paths,
            )  # fmt: skip
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{run} is being written by another process")
        assert f"pid {holder.pid}" in message and "kill" in message
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing else touched
    finally:
        holder.kill()
        holder.wait()
    with one_writer(run / LOCK_NAME, "finetune"):  # freed when its holder died, killed or not
        pass


def test_a_cell_as_a_number_and_as_the_results_tables_print_it():
    assert as_number("0.25") == 0.25 and as_number(3) == 3.0
    assert all(math.isnan(as_number(x)) for x in (None, "", "abc", float("nan"), [1, 2]))
    assert format_number(0.12345) == "0.123" and format_number(2, digits=1) == "2.0"
    assert format_number(None) == format_number("nan") == format_number("x") == "–"
    assert format_number(float("inf")) == "∞" and format_number(float("-inf")) == "−∞"


def test_process_start_time_is_the_process_s_start_to_the_clock_tick():
    """The start-up a job records (phase_s["startup"]) is now minus this: a child just forked started a few
    ms ago, never a second (a start time from /proc/stat's whole-second btime was off by up to one)."""
    import os
    import time

    from smalldl.utils import process_start_time

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, f"{time.time() - process_start_time():.6f}".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    since_fork = float(os.read(read, 64))
    assert -0.02 <= since_fork < 0.1
    assert time.time() - process_start_time() >= 0  # this process: started before the test, however long ago
