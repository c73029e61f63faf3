"""The job step side of ``snakemake_executor_plugin_slurm_groups``: runs the members of a group job
side by side in the group's allocation, each as an ``srun`` step that overlaps the others.

snakemake-executor-plugin-slurm-jobstep 0.6.1 runs a member as ``srun -n1 --cpu-bind=q
--cpus-per-task=T [--gpus=G] --nodes=1``. Two such steps never run at once in an allocation with one
GPU: the first holds the GPU (SLURM 22.05: "step creation temporarily disabled ... Requested nodes are
busy"), and without ``--gpus`` a step still gets all of the job's GPUs, and without ``--mem`` all of
its memory, so CPU-only steps wait for each other too. ``srun --overlap`` lets steps share the
allocation's CPUs, memory and GPUs; without ``--cpus-per-task`` (which would mean ``--exact``: every
overlapping step placed, and on clusters that bind tasks, bound, on the same first T CPUs) and without
``--gpus`` each member sees the whole allocation, as a job does on a box of its own: the GPUs in
``CUDA_VISIBLE_DEVICES``, where ``smalldl.devices`` gives each member a slot, at most ``jobs_per_gpu`` to
a card. How many run at once is the inner Snakemake's ``--jobs``, set by the submitting executor.

MPI members and job arrays go through the slurm-jobstep plugin unchanged.
"""

import os
import subprocess
import threading
from dataclasses import dataclass

from snakemake_executor_plugin_slurm_jobstep import Executor as JobstepExecutor
from snakemake_executor_plugin_slurm_jobstep import ExecutorSettings as JobstepExecutorSettings
from snakemake_executor_plugin_slurm_jobstep import (
    common_settings,  # noqa: F401  (plugin interface)
    get_node_setting,
)
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

# SLURM variables a nested srun may keep (as the slurm-jobstep plugin): the allocation's identity
KEEP_SLURM = {
    "SLURM_JOB_ID",
    "SLURM_JOBID",
    "SLURM_CLUSTER_NAME",
    "SLURM_SUBMIT_DIR",
    "SLURM_SUBMIT_HOST",
}


@dataclass
class ExecutorSettings(JobstepExecutorSettings):
    """The slurm-jobstep plugin's (internal) settings, as ``--slurm-groups-jobstep-<setting>``."""


def step_command(node_setting: str = "--nodes=1") -> str:
    """The srun prefix of a member's step: one task, overlapping the other members' steps."""
    return f"srun -n1 {node_setting} --overlap --cpu-bind=q"


def step_env(environ) -> dict:
    """The environment of a nested srun: the slurm-jobstep plugin's clean-up (no step or client
    defaults inherited from the batch step), GPUs (CUDA_VISIBLE_DEVICES) kept."""
    env = dict(environ)
    for var in list(env):
        if (var.startswith("SLURM_") and var not in KEEP_SLURM) or var.startswith(("SRUN_", "SBATCH_")):
            del env[var]
    return env


class Executor(JobstepExecutor):
    """Starts each member's step and returns: the slurm-jobstep plugin waits for a step inside
    ``run_job``, so that its members run one after another whatever the inner ``--jobs``; here a thread
    per step waits and reports, and the inner Snakemake starts the next member meanwhile."""

    def __post_init__(self):
        super().__post_init__()
        self._steps: dict[int, subprocess.Popen] = {}
        self._steps_lock = threading.Lock()

    def run_job(self, job):
        if "mpi" in job.resources.keys() or (self.job_array_task and self.workflow.executor_settings.array_execs):
            return super().run_job(job)
        call = step_command(get_node_setting(job))
        script = None
        if self.workflow.executor_settings.pass_command_as_script:
            script = self.format_job_exec(job)
            call += " sh -s"
        else:
            call += f" {self.format_job_exec(job)}"
        self.logger.debug(f"slurm-groups-jobstep call: {call}")
        proc = subprocess.Popen(call, shell=True, text=True, stdin=subprocess.PIPE, env=step_env(os.environ))
        job_info = SubmittedJobInfo(job)
        if script is not None:
            try:
                proc.stdin.write(script)
                proc.stdin.close()
            except BrokenPipeError:
                self.report_job_error(job_info)
                raise WorkflowError(f"Job {job} failed: srun ended before reading its script") from None
        with self._steps_lock:
            self._steps[proc.pid] = proc
        self.report_job_submission(job_info)
        threading.Thread(target=self._wait, args=(proc, job_info), daemon=True).start()

    def _wait(self, proc, job_info):
        returncode = proc.wait()
        with self._steps_lock:
            self._steps.pop(proc.pid, None)
        if returncode != 0:
            self.report_job_error(job_info)
        else:
            self.report_job_success(job_info)

    def cancel(self):
        with self._steps_lock:
            steps = list(self._steps.values())
        for proc in steps:  # srun forwards SIGTERM to its step
            if proc.poll() is None:
                proc.terminate()
