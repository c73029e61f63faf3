"""GPU slots (smalldl.devices) on fake GPUs: concurrent jobs never put more than jobs_per_gpu on a GPU and
spread over all of them, a killed job's slot goes to the next claimant at once, CPU jobs claim nothing,
and a training job holds its slot while it runs and records it."""

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from smalldl import devices
from smalldl.devices import Gpu, claim, job_device, occupancy
from smalldl.errors import InputError

from ..conftest import ROOT
from .test_finetune_job import prepared, run_job, run_lr_find  # noqa: F401 (the fixture, requested by name)

FAKE2 = [Gpu(0, "fake0", "cpu"), Gpu(1, "fake1", "cpu")]


@pytest.fixture
def python():
    """Start ``python -c code args`` with this checkout's smalldl; whatever is left running is killed."""
    started = []

    def start(code: str, *args: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


#: A job: wait for the go file, claim a slot of 2 fake GPUs (2 jobs each), hold it HOLD s, print
#: (GPU, start, end) as JSON. Start and end are taken inside the claim, so overlaps are real.
JOB = """
import json, sys, time
from pathlib import Path
from smalldl.devices import Gpu, claim
slots, go, ready, hold = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
ready.touch()
while not go.exists():
    time.sleep(0.01)
slot = claim([Gpu(0, "fake0", "cpu"), Gpu(1, "fake1", "cpu")], 2, job="test", directory=slots, poll=0.02)
start = time.time()
time.sleep(hold)
end = time.time()
slot.release()
print(json.dumps({"gpu": slot.gpu.key, "slot": slot.index, "start": start, "end": end}))
"""


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # an end before a start
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_concurrent_jobs_never_exceed_jobs_per_gpu_and_use_every_gpu(tmp_path, python):
    """12 jobs started together on 2 GPUs x 2 slots: at most 2 on a GPU at any moment, 4 at once, the
    others waiting (and saying so) until a slot is free."""
    slots, go = tmp_path / "slots", tmp_path / "go"
    procs = [python(JOB, str(slots), str(go), str(tmp_path / f"ready{i}"), "0.6") for i in range(12)]
    deadline = time.time() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(12)) and time.time() < deadline:
        time.sleep(0.05)
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    runs = [json.loads(out) for out, _ in results]
    per_gpu = {key: [(r["start"], r["end"]) for r in runs if r["gpu"] == key] for key in ("fake0", "fake1")}
    assert {key: most_at_once(spans) for key, spans in per_gpu.items()} == {"fake0": 2, "fake1": 2}
    assert sum(len(spans) for spans in per_gpu.values()) == 12
    assert {r["slot"] for r in runs} == {0, 1}
    assert any("waiting for a GPU slot" in err for _, err in results)
    assert occupancy(slots) == {}


def test_claims_go_to_the_least_loaded_gpu_and_a_released_slot_is_reused(tmp_path):
    held = [claim(FAKE2, 2, directory=tmp_path) for _ in range(3)]
    assert [(s.gpu.key, s.index) for s in held] == [("fake0", 0), ("fake1", 0), ("fake0", 1)]
    assert occupancy(tmp_path) == {"fake0": {0, 1}, "fake1": {0}}
    held[0].release()
    again = claim(FAKE2, 2, directory=tmp_path)  # fake0 and fake1 now hold one job each: the lower index
    assert (again.gpu.key, again.index) == ("fake0", 0)
    assert "pid " in again.path.read_text()  # who holds it, for a human
    for slot in (again, *held[1:]):
        slot.release()
    assert occupancy(tmp_path) == {}


#: Claim the only slot of one fake GPU, say so, hold it until killed.
HOLDER = """
import sys, time
from smalldl.devices import Gpu, claim
slot = claim([Gpu(0, "fake0", "cpu")], 1, job="holder", directory=sys.argv[1], poll=0.02)
print("claimed", slot.index, flush=True)
time.sleep(600)
"""


def first_line(proc: subprocess.Popen, stream: str = "stdout", timeout: float = 60) -> str:
    pipe = getattr(proc, stream)
    ready, _, _ = select.select([pipe], [], [], timeout)
    return pipe.readline() if ready else ""


def test_a_killed_jobs_slot_is_reclaimed_by_the_next_claimant_without_waiting(tmp_path, capfd, python):
    holder = python(HOLDER, str(tmp_path))
    assert first_line(holder).split() == ["claimed", "0"]
    assert occupancy(tmp_path) == {"fake0": {0}}
    waiter = python(HOLDER, str(tmp_path))  # no free slot: it waits (a job never oversubscribes)
    assert first_line(waiter, stream="stderr").startswith("waiting for a GPU slot: at most 1 job(s) on each of 1")
    time.sleep(0.2)
    assert waiter.poll() is None and occupancy(tmp_path) == {"fake0": {0}}
    waiter.send_signal(signal.SIGKILL)  # killed while first in line: the turn passes on
    waiter.wait(timeout=30)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    t0 = time.monotonic()
    slot = claim([Gpu(0, "fake0", "cpu")], 1, directory=tmp_path, poll=5.0)
    assert time.monotonic() - t0 < 2.0 and (slot.gpu.key, slot.index) == ("fake0", 0)
    assert "waiting" not in capfd.readouterr().err
    slot.release()


def test_cpu_jobs_claim_nothing(tmp_path):
    with job_device("cpu", 1, gpus=FAKE2, directory=tmp_path) as (name, slot):
        assert (name, slot) == ("cpu", None)
    with job_device("auto", 1, gpus=[], directory=tmp_path) as (name, slot):
        assert (name, slot) == ("cpu", None)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="device: cuda, but no CUDA device is visible"):
        with job_device("cuda", 1, gpus=[], directory=tmp_path):
            pass


def test_a_gpu_job_holds_its_slot_for_the_block_only(tmp_path):
    with pytest.raises(RuntimeError, match="job failed"):
        with job_device("auto", 1, gpus=FAKE2, directory=tmp_path) as (name, slot):
            assert (name, slot.gpu.key) == ("cpu", "fake0")  # a fake GPU computes on the CPU
            assert occupancy(tmp_path) == {"fake0": {0}}
            raise RuntimeError("job failed")
    assert occupancy(tmp_path) == {}


def test_fake_gpus_and_the_slot_directory_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv(devices.FAKE_ENV, "3")
    assert [(g.index, g.key, g.torch_device) for g in devices.visible_gpus()] == [
        (0, "fake0", "cpu"),
        (1, "fake1", "cpu"),
        (2, "fake2", "cpu"),
    ]
    # a SLURM job given fake GPUs 2 and 3 of a node: named as they, so that jobs given others never wait
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv(devices.FAKE_ENV, "2")
    assert [(g.index, g.key) for g in devices.visible_gpus()] == [(0, "fake2"), (1, "fake3")]
    monkeypatch.setenv(devices.FAKE_ENV, "two")
    with pytest.raises(InputError, match="SMALLDL_FAKE_GPUS"):
        devices.visible_gpus()
    monkeypatch.setenv(devices.SLOTS_ENV, str(tmp_path / "shared"))
    assert devices.slot_directory() == tmp_path / "shared" and (tmp_path / "shared").is_dir()
    monkeypatch.delenv(devices.SLOTS_ENV)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mine = devices.slot_directory()
    assert mine == tmp_path / f"smalldl-slots-{os.getuid()}" and (mine.stat().st_mode & 0o777) == 0o700


def test_training_jobs_run_on_their_slots_device_and_record_it(tmp_path, monkeypatch):
    from smalldl.jobs._shared import environment, training_torch

    monkeypatch.setenv(devices.FAKE_ENV, "2")
    monkeypatch.setenv(devices.SLOTS_ENV, str(tmp_path))
    other = claim(FAKE2, 2, directory=tmp_path)  # another job on fake0: this one goes to fake1
    with training_torch({"device": "auto", "jobs_per_gpu": 2}, 1, job="finetune x") as (torch, device, slot):
        assert device == torch.device("cpu") and (slot.gpu.key, slot.index) == ("fake1", 0)
        assert occupancy(tmp_path) == {"fake0": {0}, "fake1": {0}}
        assert "finetune x" in slot.path.read_text()
        env = environment(device, slot=slot)
        assert (env["device"], env["gpu"], env["gpu_slot"]) == ("cpu", "fake1", 0)
    assert occupancy(tmp_path) == {"fake0": {0}}
    other.release()
    with training_torch({"device": "cpu", "jobs_per_gpu": 2}, 1) as (torch, device, slot):
        assert slot is None and occupancy(tmp_path) == {}
        env = environment(device, slot=slot)
        assert (env["device"], env["gpu"], env["gpu_slot"]) == ("cpu", None, None)


def test_the_training_jobs_hold_a_slot_while_they_run_and_record_it(request, tmp_path, monkeypatch):
    """lr_find, finetune and pretrain on fake GPUs: each claims a slot (finetune on the GPU another job
    leaves free), releases it when done, and the records say which GPU and slot."""
    from smalldl.jobs import pretrain as pretrain_jobs

    tmp, config = request.getfixturevalue("prepared")  # tests/unit/test_finetune_job.py's data and config
    monkeypatch.setenv(devices.FAKE_ENV, "2")
    monkeypatch.setenv(devices.SLOTS_ENV, str(tmp_path))
    config = {**config, "train": {**config["train"], "device": "auto", "jobs_per_gpu": 2, "epochs": 1}}
    info = run_lr_find(tmp, config, n=20, out=tmp_path)
    assert info["lr"] > 0 and occupancy(tmp_path) == {}
    other = claim(FAKE2, 2, directory=tmp_path)
    out, metrics = run_job(tmp, config, tag="slots")
    other.release()
    saved = json.loads((out / "metrics.json").read_text())
    assert (saved["device"], saved["gpu"], saved["gpu_slot"]) == ("cpu", "fake1", 0) and metrics == saved
    assert occupancy(tmp_path) == {}
    meta = pretrain_jobs.pretrain(
        source="cxr13", arch="smallcnn", recipe_name="onecycle-finetune-none-default", task_name="emphysema",
        task=config["tasks"]["emphysema"], settings={**config["train"], "checkpoint": False},
        global_seed=config["seed"], cache_npy=tmp / "c.npy", cache_meta=tmp / "c.json",
        split_parquet=tmp / "split.parquet", start_ckpt=None, out_ckpt=tmp_path / "m.pt",
        out_metrics=tmp_path / "m.json", out_history=tmp_path / "h.csv",
    )  # fmt: skip
    assert (meta["device"], meta["gpu"], meta["gpu_slot"]) == ("cpu", "fake0", 0)
    assert occupancy(tmp_path) == {}
