"""The fork server (smalldl/forkserver.py): a training job's process hands its script to a child of one
process that imported the heavy modules once; the child is the job's process in all that a script sees
(streams, working directory, environment, arguments, exit status), a killed job's process takes its child
with it, and where no server can be used the job runs in its own process."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ..conftest import ROOT

CLIENT = textwrap.dedent(
    """
    import sys
    from smalldl import forkserver
    sys.argv = [sys.argv[1], *sys.argv[2:]]
    code = forkserver.delegate(sys.argv[0], ["json"], "cpu")
    print("delegated" if code is not None else "not delegated", flush=True)
    forkserver.exit_like(code if code is not None else 99)
    """
)


def client(script, *args, cwd, env=None, **kw):
    env = {**{k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(script), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


SLOW = "import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n"


def wait_for(path, seconds=60):
    """Until the file ``path`` has content (the child started and wrote it)."""
    deadline = time.monotonic() + seconds
    while not path.is_file() or not path.read_text():
        assert time.monotonic() < deadline, f"no {path} after {seconds} s"
        time.sleep(0.05)


def test_the_child_is_the_job_s_process_in_all_a_script_sees(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            print("out", os.environ["JOB_X"], sys.argv[1:], os.getcwd())
            print("err", file=sys.stderr)
            open("written.txt", "w").write(f"{os.getpid()} {os.getppid()} {os.environ.get('SMALLDL_FORK_CHILD')}")
            sys.exit(3)
            """
        )
    )
    parents = set()
    for value in ("1", "2"):
        proc = client(script, "a", "b", cwd=tmp_path, env={"JOB_X": value})
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err
        assert out.splitlines() == [f"out {value} ['a', 'b'] {tmp_path}", "delegated"]
        assert err.strip() == "err"
        pid, ppid, flag = (tmp_path / "written.txt").read_text().split()
        assert int(pid) != proc.pid and flag == "1"
        parents.add(ppid)
    assert len(parents) == 1  # the second job's child came from the same server


def test_a_killed_job_s_process_takes_its_child_with_it(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    proc = client(script, cwd=tmp_path)
    wait_for(tmp_path / "pid")
    child = int((tmp_path / "pid").read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"the child {child} of a killed job's process still runs")


def test_a_job_s_process_that_is_stopped_stops_its_child(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    proc = client(script, cwd=tmp_path)
    wait_for(tmp_path / "pid")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM  # the child's status, as Snakemake would see the job's


@pytest.mark.parametrize("env", [{"SMALLDL_FORK_SERVER": "0"}, {"SLURM_JOB_ID": "7"}, {"SMALLDL_FORK_CHILD": "1"}])
def test_where_the_server_does_not_apply_the_job_runs_in_its_own_process(tmp_path, env):
    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    proc = client(script, cwd=tmp_path, env=env)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out.strip()) == (99, "not delegated"), err


def test_an_edited_library_or_other_thread_settings_get_another_server(monkeypatch):
    from smalldl import forkserver

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one = forkserver.socket_path(["json"])
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert forkserver.socket_path(["json"]) != one
    monkeypatch.setattr(forkserver, "_library_state", lambda: "edited")
    assert forkserver.socket_path(["json"]) not in (one, forkserver.socket_path(["json", "x"]))
    assert len(forkserver.socket_path(["json"]).encode()) < 108


def test_the_server_s_socket_is_private_and_another_user_is_not_served(tmp_path):
    """The child runs a script as the server's user: the socket is created owner-only (no moment in
    which it is open to others) and a connection from another user is refused (SO_PEERCRED); that user's
    job runs in its own process."""
    from smalldl import forkserver

    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    proc = client(script, cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert out.strip().endswith("delegated") and "not" not in out, err
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SLURM_JOB_ID", None)
    code = "from smalldl import forkserver; print(forkserver.socket_path(['json']))"
    path = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()
    assert os.stat(path).st_mode & 0o077 == 0  # no permission for the group or others
    import socket

    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert forkserver._same_user(left)  # this process's own user
    if os.getuid() != 0:
        return  # becoming another user needs root
    pid = os.fork()
    if pid == 0:  # another user (nobody) tries the socket
        code = 1
        try:
            os.setuid(65534)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except PermissionError:
                code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0, "another user could connect to the server's socket"
