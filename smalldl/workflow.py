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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from smalldl.errors import InputError
from smalldl.forkserver import preload


def _remove_outputs(outputs: list[str]) -> None:
    for out in outputs:
        path = Path(out)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()


#: What a training job (finetune, lr_find, pretrain, final_run) imports: ``run``'s ``preload``. The job
#: module brings pandas and pyarrow, about 0.25 s of a job forked from the fork server otherwise.
TRAINING_MODULES = ("torch", "timm", "smalldl.train", "smalldl.evaluate", "smalldl.jobs.train")
#: What a radiomics model job imports (scikit-learn's models, the job module): its start-up is most of a
#: demo radiomics job, which the fork server then pays once.
RADIOMICS_MODULES = ("sklearn.linear_model", "sklearn.ensemble", "sklearn.model_selection", "smalldl.jobs.radiomics")


def job_settings(params_settings: Any, resources: Any, threads: int) -> dict[str, Any]:
    """A training job's settings: its rule's ``params.settings`` (what changes a result) with the scheduling
    keys (``smalldl.config.SCHEDULING_KEYS``) taken from its ``resources`` and ``threads``, which Snakemake
    does not compare: a changed device, memory or checkpoint setting reruns nothing."""
    settings = dict(params_settings)
    settings["threads"] = int(threads)
    for key in ("mem_mb", "runtime", "gpu", "jobs_per_gpu"):
        if getattr(resources, key, None) is not None:
            settings[key] = int(getattr(resources, key))
    settings["device"] = str(resources.device)
    settings["eval_batch_size"] = int(resources.eval_batch_size) or None
    settings["checkpoint"] = bool(int(resources.checkpoint))
    return settings


def training_arguments(smk: Any) -> dict[str, Any]:
    """The arguments every training job (``smalldl.jobs.train.lr_find``, ``finetune``) of a rule with finetune's
    wildcards task/arch/recipe and inputs cache/cache_meta/split/subset[/source] shares."""
    w = smk.wildcards
    return dict(
        task_name=w.task,
        task=smk.params.task,
        arch=w.arch,
        recipe_name=w.recipe,
        settings=job_settings(smk.params.settings, smk.resources, smk.threads),
        global_seed=smk.params.seed,
        cache_npy=smk.input.cache,
        cache_meta=smk.input.cache_meta,
        split_parquet=smk.input.split,
        subset_csv=smk.input.subset,
        source_ckpt=smk.input.get("source"),
        threads=smk.threads,
    )


def finetune_arguments(smk: Any) -> dict[str, Any]:
    """The keyword arguments of ``smalldl.jobs.train.finetune`` for a job of a rule with finetune's
    wildcards, inputs, params and outputs (rules finetune and final_run): ``training_arguments`` and its
    size, seed, lr finder's choice and outputs."""
    w = smk.wildcards
    return dict(
        training_arguments(smk),
        n=int(w.n),
        seed=int(w.seed),
        lr_json=smk.input.get("lr"),
        out_metrics=smk.output.metrics,
        out_predictions=smk.output.predictions,
        out_val_predictions=smk.output.val_predictions,
        out_history=smk.output.history,
    )


def run(main: Callable[[Any], None], smk: Any, preload_modules: Sequence[str] = ()) -> None:
    """Run ``main(smk)`` with stdout/stderr appended to the rule's log, after importing ``preload_modules``
    (``preload``; e.g. ``TRAINING_MODULES``) with the threads of the rule set.

    An InputError becomes one ``ERROR: ...`` line in the log and on the terminal, outputs are removed
    and the process exits 1. Any other exception keeps its traceback in the log. A job that ends well
    ends its process (``_exit_now``).
    """
    log_path = Path(smk.log[0]) if len(smk.log) else None
    terminal = sys.__stderr__
    threads = int(getattr(smk, "threads", 1) or 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    if preload_modules:  # a job with heavy imports: its script runs in a child of the fork server, if any
        from smalldl import forkserver

        device = str(getattr(getattr(smk, "resources", None), "device", "auto"))
        code = forkserver.delegate(main.__code__.co_filename, preload_modules, device)
        if code is not None:
            forkserver.exit_like(code)
    with contextlib.ExitStack() as stack:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(log_path, "a", buffering=1))
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        preload(preload_modules)
        start = time.time()
        rule = getattr(smk, "rule", "job")
        where = " in a child of the fork server" if os.environ.get("SMALLDL_FORK_CHILD") else ""
        print(
            f"[{time.strftime('%H:%M:%S')}] {rule}: start (pid {os.getpid()}{where}, {threads} thread(s))",
            file=sys.stderr,
        )
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
    _exit_now()


def _exit_now() -> None:
    """End a finished job's process as the interpreter would, less its finalization: wait for the threads a
    normal exit waits for, run the exit handlers (multiprocessing joins its children there, logging flushes),
    flush the streams, then leave. Tearing the modules down and collecting their objects is what is skipped:
    with torch, timm and torchvision loaded (torchvision imports dynamo and sympy) it takes 2 to 4 s on a busy
    2-core CPU, a quarter of a demo fine-tuning job, and writes nothing (every output is written atomically
    and closed, the log closed by the caller's ``with``)."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()
    os._exit(0)
