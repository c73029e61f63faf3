"""One process's imports reused by the training jobs of a local run: a fork server.

A training job's process spends about 2.4 s of CPU importing torch, timm and torchvision (with dynamo and
sympy) before it trains for a few seconds: over a third of a demo fine-tuning job
(``benchmarks/finetune_phases.py --forked``). Here the first training job of a run starts a server that
imports them once (``preload``) and listens on a Unix socket; every training job's process (the one
Snakemake starts, which runs its rule's script) then hands its script to the server, which forks a child
with those modules already imported. The child takes the job's standard streams (passed over the socket),
working directory, environment and arguments, runs the very same script file Snakemake wrote for the job,
and exits with its status, which the job's process returns to Snakemake. The arithmetic is the job's own:
nothing runs in the server but imports, so a child computes what a fresh process computes (the outputs are
byte-identical: tests/unit/test_forkserver.py, tests/workflow/test_tiny_workflow.py).

Where it applies: jobs on a CPU of a local run (not under SLURM, where each job has its own allocation, nor
on a CUDA machine, whose driver state a fork would share), with ``SMALLDL_FORK_SERVER`` not ``0``. Anything
that goes wrong before the child starts (no server could start, a refused connection) makes the job run in
its own process, as without the server. The server serves one user, one Python and one version of the
library (the socket's name hashes them: an edited smalldl gets a new server; the socket is created
owner-only in ``$XDG_RUNTIME_DIR`` or the temporary folder, and a connection from another user is refused),
one job at a time per child, several children at once; it ends when it has had no job for ``IDLE_S``
seconds. A job's process that is stopped (Snakemake cancels it: SIGTERM, SIGINT) stops its child; one
killed outright (SIGKILL) closes its connection, and the server then stops the child (``one_writer`` keeps a
second writer out of a run folder meanwhile).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import os
import pickle
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

#: Seconds a server waits for a job before it ends.
IDLE_S = 60.0
#: Seconds a job's process waits for a server it started to listen.
START_S = 60.0
#: Set in a child: its script runs there, never delegated again.
CHILD_ENV = "SMALLDL_FORK_CHILD"
SWITCH_ENV = "SMALLDL_FORK_SERVER"
_HEADER = struct.Struct("!Q")
_STATUS = struct.Struct("!q")


def enabled(device: str = "auto") -> bool:
    """Whether a training job with ``device`` (its resources' device) hands its script to a fork server."""
    if os.environ.get(SWITCH_ENV, "1") == "0" or os.environ.get(CHILD_ENV):
        return False
    if os.environ.get("SLURM_JOB_ID") or not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return False
    if device == "cuda" or (device == "auto" and os.path.exists("/dev/nvidiactl")):
        return False
    return True


def _library_state() -> str:
    """The library's files as they are now (path, size, mtime): a changed file means another server."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


#: Read once, when the libraries load (in the server): a job with other values gets its own server.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def socket_path(modules: Sequence[str]) -> str:
    """The server's socket for this user, Python, library state, thread settings and module list (short
    enough for AF_UNIX's 108 bytes)."""
    threads = [f"{var}={os.environ.get(var, '')}" for var in THREAD_VARS]
    key = hashlib.sha256(
        "\0".join([str(os.getuid()), sys.executable, sys.version, _library_state(), *threads, *modules]).encode()
    ).hexdigest()[:20]
    return str(Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"smalldl-fork-{key}.sock")


def preload(modules: Sequence[str]) -> None:
    """Import ``modules`` with the cyclic garbage collector off, then freeze what they created. Importing
    torch, timm and torchvision (which imports dynamo and sympy) creates millions of objects, and every full
    collection walks all of them: 7 collections, 1.7 to 2 s of a demo job's start on a busy 2-core CPU. Frozen,
    later collections skip them (they live as long as the process anyway)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


# ------------------------------------------------------------------------------------------------ client


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _start_server(path: str, modules: Sequence[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != CHILD_ENV}
    log = Path(path).with_suffix(".log")
    with open(log, "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "smalldl.forkserver", path, *modules],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd="/",
            env=env,
            start_new_session=True,
            close_fds=True,
        )


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except InterruptedError:
            continue
        if not chunk:
            return None
        data += chunk
    return data


def delegate(script: str, modules: Sequence[str], device: str = "auto") -> int | None:
    """Run ``script`` (the job's script file, as ``python script`` would) in a child of the fork server
    for ``modules``, starting the server if there is none; its exit status, or None when no server could
    be used (the caller then runs the job itself)."""
    if not enabled(device):
        return None
    path = socket_path(modules)
    sock = _connect(path)
    if sock is None:
        _start_server(path, modules)
        deadline = time.monotonic() + START_S
        while sock is None and time.monotonic() < deadline:
            time.sleep(0.05)
            sock = _connect(path)
        if sock is None:
            return None
    with sock:
        request = pickle.dumps(
            {"script": script, "argv": list(sys.argv), "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path}
        )
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            socket.send_fds(sock, [_HEADER.pack(len(request))], [0, 1, 2])
            sock.sendall(request)
            pid_bytes = _recv_exact(sock, _STATUS.size)
        except OSError:
            return None
        if pid_bytes is None:
            return None
        child = _STATUS.unpack(pid_bytes)[0]

        def forward(signum, _frame):
            with contextlib.suppress(OSError):
                os.kill(child, signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, forward)
        status = _recv_exact(sock, _STATUS.size)
    if status is None:
        print(f"ERROR: the fork server ({path}) ended while it ran this job", file=sys.stderr)
        return 1
    return _STATUS.unpack(status)[0]


def exit_like(code: int) -> None:
    """End the job's process with its child's status: the exit code, or death by the same signal (a
    negative status), as Snakemake would have seen the job end in its own process."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
    os._exit(code & 0xFF)


# ------------------------------------------------------------------------------------------------ server


def _child(conn: socket.socket, listener: socket.socket, others: Sequence[socket.socket], fds, request) -> None:
    """In the forked child: become the job's process and run its script; never returns."""
    code = 1
    try:
        listener.close()
        for other in others:
            other.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        os.setpgid(0, 0)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[CHILD_ENV] = "1"
        sys.argv = list(request["argv"])
        sys.path[:] = list(request["path"])
        conn.close()
        import runpy

        try:
            runpy.run_path(request["script"], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _same_user(conn: socket.socket) -> bool:
    """Whether the process at the other end of ``conn`` runs as this server's user (SO_PEERCRED): a job's
    script runs as the server's user, so no one else may hand it one."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return False
    return struct.unpack("3i", creds)[1] == os.getuid()


def serve(path: str, modules: Sequence[str], idle_s: float = IDLE_S) -> None:
    """Import ``modules`` once, then fork a child per request on ``path`` until ``idle_s`` without one."""
    import fcntl

    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another server holds it: the job's process connects to that one
    with contextlib.suppress(ImportError):
        import snakemake.script  # noqa: F401  (what the preamble of a rule's script imports)
    preload(modules)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o077)  # the socket is created private: no moment in which another user may connect
    try:
        listener.bind(path)
    finally:
        os.umask(umask)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    last = time.monotonic()
    try:
        while children or time.monotonic() - last < idle_s:
            for key, _ in selector.select(timeout=0.2):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    if not _same_user(conn):
                        conn.close()
                        continue
                    try:
                        header, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
                        size = _HEADER.unpack(header)[0]
                        request = pickle.loads(_recv_exact(conn, size) or b"")
                    except (OSError, struct.error, pickle.UnpicklingError, EOFError):
                        conn.close()
                        continue
                    for stream in (sys.stdout, sys.stderr):
                        stream.flush()
                    pid = os.fork()
                    if pid == 0:
                        _child(conn, listener, list(children.values()), fds, request)
                    for fd in fds:
                        os.close(fd)
                    children[pid] = conn
                    selector.register(conn, selectors.EVENT_READ, pid)
                    conn.sendall(_STATUS.pack(pid))
                else:  # the job's process went away (killed): stop its child
                    with contextlib.suppress(OSError):
                        os.killpg(key.data, signal.SIGTERM)
                    selector.unregister(key.fileobj)
            while children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                conn = children.pop(pid, None)
                if conn is None:
                    continue
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(conn)
                with contextlib.suppress(OSError):
                    conn.sendall(_STATUS.pack(os.waitstatus_to_exitcode(status)))
                conn.close()
                last = time.monotonic()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
