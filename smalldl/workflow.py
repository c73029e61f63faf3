"""Glue used by workflow_scripts/: log redirection, threads, one-line errors, no partial outputs.

Takes the ``snakemake`` object as a plain argument; nothing here imports Snakemake.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smalldl.errors import InputError


def _remove_outputs(outputs: list[str]) -> None:
    for out in outputs:
        path = Path(out)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()


def run(main: Callable[[Any], None], smk: Any) -> None:
    """Run ``main(smk)`` with stdout/stderr appended to the rule's log.

    An InputError becomes one ``ERROR: ...`` line in the log and on the terminal, outputs are removed
    and the process exits 1. Any other exception keeps its traceback in the log.
    """
    log_path = Path(smk.log[0]) if len(smk.log) else None
    terminal = sys.__stderr__
    threads = int(getattr(smk, "threads", 1) or 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    with contextlib.ExitStack() as stack:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(log_path, "a", buffering=1))
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        start = time.time()
        rule = getattr(smk, "rule", "job")
        print(f"[{time.strftime('%H:%M:%S')}] {rule}: start (pid {os.getpid()}, {threads} thread(s))", file=sys.stderr)
        try:
            main(smk)
        except InputError as exc:
            message = f"ERROR in rule {rule}: {exc}"
            print(message, file=sys.stderr)
            if terminal is not None:
                print(message, file=terminal, flush=True)
            _remove_outputs(list(smk.output))
            raise SystemExit(1) from None
        except BaseException:
            traceback.print_exc()
            _remove_outputs(list(smk.output))
            raise
        print(f"[{time.strftime('%H:%M:%S')}] {rule}: done in {time.time() - start:.1f}s", file=sys.stderr)
