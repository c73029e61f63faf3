"""A finished job's process ends without the interpreter's finalization (smalldl.workflow._exit_now: 2 to 4 s
of every torch job on a busy CPU) but with everything a normal exit does that can write: threads joined,
exit handlers run, streams flushed."""

import subprocess
import sys
import time

from ..conftest import ROOT

JOB = """
import atexit, sys, threading, time
from types import SimpleNamespace
sys.path.insert(0, {root!r})
from smalldl import workflow

out = {out!r}

def main(smk):
    def late():
        time.sleep(0.5)
        open(out + "/thread.txt", "w").write("written by a thread")
    threading.Thread(target=late).start()
    atexit.register(lambda: open(out + "/atexit.txt", "w").write("written at exit"))
    print("to the log, unflushed", end="")
    sys.__stdout__.write("to the terminal, unflushed")
    open(out + "/output.txt", "w").write("the job's output")

smk = SimpleNamespace(log=[out + "/job.log"], output=[out + "/output.txt"], threads=1, rule="probe")
workflow.run(main, smk)
raise SystemExit("not reached: run() ends the process")
"""


def test_a_finished_job_exits_0_with_its_threads_exit_handlers_and_streams_done(tmp_path):
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", JOB.format(root=str(ROOT), out=str(tmp_path))], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert time.time() - t0 >= 0.5  # the thread was waited for
    assert (tmp_path / "thread.txt").read_text() == "written by a thread"
    assert (tmp_path / "atexit.txt").read_text() == "written at exit"
    assert (tmp_path / "output.txt").exists()
    log = (tmp_path / "job.log").read_text()
    assert "to the log, unflushed" in log and "probe: done in" in log
    assert proc.stdout == "to the terminal, unflushed"
    assert "not reached" not in proc.stderr


def test_a_failed_job_still_exits_1_and_removes_its_output(tmp_path):
    write = 'open(out + "/output.txt", "w").write("the job\'s output")'
    job = JOB.replace(write, 'open(out + "/output.txt", "w"); 1 / 0')
    proc = subprocess.run(
        [sys.executable, "-c", job.format(root=str(ROOT), out=str(tmp_path))], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert not (tmp_path / "output.txt").exists()
    assert "ZeroDivisionError" in (tmp_path / "job.log").read_text()


PRELOAD = """
import gc, importlib, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {mods!r})
from smalldl import workflow
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
if {preload}:
    workflow.preload(["heavy"])
else:
    importlib.import_module("heavy")
print(len(collections), gc.isenabled(), gc.get_freeze_count() > 0, "heavy" in sys.modules)
"""


def test_preloading_imports_without_collections_and_freezes_what_they_made(tmp_path):
    (tmp_path / "heavy.py").write_text("OBJECTS = [[i] for i in range(1_000_000)]\n")  # as torch's import does

    def probe(preload):
        code = PRELOAD.format(root=str(ROOT), mods=str(tmp_path), preload=preload)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()

    assert probe(False)[0] != "0"  # a plain import collects, again and again
    assert probe(True) == ["0", "True", "True", "True"]
