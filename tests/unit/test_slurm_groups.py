"""The SLURM group executor (snakemake_executor_plugin_slurm_groups and its job step side), without
SLURM: Snakemake finds both plugins; a group of GPU members with jobs_per_gpu k is planned k at a time
(--time, CPUs, memory of k members, one member's GPUs) and its inner Snakemake gets --jobs k and the
overlapping job step; other groups and jobs are left to the slurm plugin; the job step starts a
member's srun with --overlap and without asking for CPUs or GPUs, and returns while it runs."""

import os
import re
import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from snakemake.resources import Resources
from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

import snakemake_executor_plugin_slurm_groups as groups
import snakemake_executor_plugin_slurm_groups_jobstep as jobstep


def test_snakemake_finds_both_plugins():
    registry = ExecutorPluginRegistry()
    assert registry.get_plugin("slurm-groups").executor is groups.Executor
    assert registry.get_plugin("slurm-groups-jobstep").executor is jobstep.Executor


def member(gpu=1, share=2, threads=2, mem_mb=1000, runtime=60):
    resources = {"_cores": threads, "_nodes": 1, "mem_mb": mem_mb, "runtime": runtime, "gpu": gpu, "group_turn": 1}
    if share is not None:
        resources["jobs_per_gpu"] = share
    return SimpleNamespace(resources=resources, pipe_group=None)


def group(members, cores=100):
    limits = Resources.from_mapping({"_cores": cores, "_nodes": 1, "group_turn": 1})
    return SimpleNamespace(jobs=members, toposorted=[members], global_resources=limits)


def test_gpu_members_that_share_run_k_at_a_time():
    five = group([member() for _ in range(5)])
    assert groups.side_by_side(five) == 2
    plan = groups.shared_plan(five, 2)
    assert plan["runtime"] == 3 * 60  # ceil(5 / 2) layers
    assert plan["_cores"] == 4 and plan["mem_mb"] == 2000  # two members at once
    assert plan["gpu"] == 1  # one member's GPU, shared: not the layer's sum
    assert plan["group_turn"] == 2  # the widest layer: the inner Snakemake's --jobs


def test_the_cores_given_to_snakemake_still_cap_a_layer():
    capped = group([member(threads=4) for _ in range(4)], cores=4)
    plan = groups.shared_plan(capped, 2)
    assert plan["group_turn"] == 1 and plan["runtime"] == 4 * 60


def test_cpu_groups_and_groups_that_do_not_share_run_in_turn():
    assert groups.side_by_side(group([member(gpu=0) for _ in range(3)])) == 1
    assert groups.side_by_side(group([member(share=1) for _ in range(3)])) == 1
    assert groups.side_by_side(group([member(share=None) for _ in range(3)])) == 1
    assert groups.side_by_side(group([member(), member(gpu=0)])) == 1  # a CPU member among them
    assert groups.side_by_side(group([member(share=3), member(share=2)])) == 2
    gres = member(gpu=0)
    gres.resources["gres"] = "gpu:a100:1"
    assert groups.side_by_side(group([gres, gres])) == 2


def executor(script=False):
    ex = object.__new__(groups.Executor)
    ex.workflow = SimpleNamespace(executor_settings=SimpleNamespace(pass_command_as_script=script))
    return ex


def a_group(members):
    g = group(members)
    g.is_group = lambda: True
    return g


def a_job():
    return SimpleNamespace(is_group=lambda: False, resources={})


@pytest.fixture
def slurm_command(monkeypatch):
    """The slurm plugin's format_job_exec reduced to what matters here: the command carries
    ``self.additional_general_args()``, asked without the job (as RealExecutor.format_job_exec does)."""

    def format_job_exec(self, job):
        return f"python -m snakemake --target-jobs x {self.additional_general_args()} --mode remote"

    monkeypatch.setattr(groups.SlurmExecutor, "format_job_exec", format_job_exec)


def test_inner_snakemake_arguments(slurm_command):
    ex = executor()
    assert ex.additional_general_args() == "--executor slurm-jobstep --jobs 1"  # the slurm plugin's, for any job
    assert "--executor slurm-jobstep --jobs 1 --mode" in ex.format_job_exec(a_job())
    five = a_group([member() for _ in range(5)])
    assert groups.planned_width(five) == 2
    assert "--executor slurm-groups-jobstep --jobs 2 --mode" in ex.format_job_exec(five)
    unshared = a_group([member(share=1) for _ in range(3)])
    assert "--executor slurm-jobstep --jobs 1 --mode" in ex.format_job_exec(unshared)
    assert (
        executor(script=True)
        .format_job_exec(a_group([member(share=3) for _ in range(3)]))
        .count("--executor slurm-groups-jobstep --jobs 3 --slurm-groups-jobstep-pass-command-as-script --mode")
        == 1
    )
    with pytest.raises(ValueError):
        groups.group_args(0)


def test_the_real_job_command_carries_additional_general_args():
    """What the slurm_command fixture stands for: the installed slurm plugin builds the command with
    RealExecutor.format_job_exec, which puts additional_general_args() in it."""
    import inspect

    from snakemake_interface_executor_plugins.executors.real import RealExecutor

    assert groups.SlurmExecutor.format_job_exec is RealExecutor.format_job_exec
    assert "self.additional_general_args()" in inspect.getsource(RealExecutor.format_job_exec)


def test_each_job_is_formatted_with_its_own_width_in_any_order_and_thread(slurm_command):
    """The width comes from the job being formatted, not from state left by another submission: jobs
    formatted interleaved, or from several threads at once, each get their own inner arguments."""
    ex = executor()
    jobs = [a_group([member() for _ in range(4)]), a_job(), a_group([member(share=3) for _ in range(3)]), a_job()]
    want = ["--jobs 2", "slurm-jobstep --jobs 1", "--jobs 3", "slurm-jobstep --jobs 1"]
    for job, args in zip(jobs * 3, want * 3, strict=True):
        assert args in ex.format_job_exec(job)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(ex.format_job_exec, jobs * 8))
    assert all(args in cmd for cmd, args in zip(got, want * 8, strict=True))


def test_a_command_without_the_slurm_plugins_arguments_fails_loudly(monkeypatch):
    """Should the slurm plugin stop putting additional_general_args() in the command, a shared group's
    --jobs cannot be set: its submission fails instead of running the members one at a time."""
    monkeypatch.setattr(groups.SlurmExecutor, "format_job_exec", lambda self, job: "python -m snakemake --mode remote")
    with pytest.raises(groups.WorkflowError, match="--jobs 2"):
        executor().format_job_exec(a_group([member() for _ in range(5)]))
    assert executor().format_job_exec(a_job()) == "python -m snakemake --mode remote"


def test_settings_are_the_slurm_plugins():
    from snakemake_executor_plugin_slurm import ExecutorSettings

    assert issubclass(groups.ExecutorSettings, ExecutorSettings)
    assert groups.common_settings.non_local_exec


def test_job_step_overlaps_and_asks_for_no_cpus_gpus_or_memory():
    call = jobstep.step_command("--nodes=1")
    assert call.startswith("srun -n1 --nodes=1 --overlap")
    assert not any(flag in call for flag in ("--gpus", "--gres", "--cpus-per-task", "--mem", "--exact"))
    env = jobstep.step_env(
        {
            "SLURM_JOB_ID": "7",
            "SLURM_STEP_GPUS": "0",
            "SLURM_CPUS_PER_TASK": "4",
            "SRUN_CPUS_PER_TASK": "4",
            "SBATCH_GRES": "gpu:1",
            "CUDA_VISIBLE_DEVICES": "0",
            "PATH": "/bin",
        }  # fmt: skip
    )
    assert env == {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "0", "PATH": "/bin"}


def test_job_step_starts_members_side_by_side(tmp_path, monkeypatch):
    """A fake srun that runs its command: two members of 1 s each are both running before either ends,
    and each is reported once, as a success or an error."""
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec sh -c "$*"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    ex = object.__new__(jobstep.Executor)
    ex.workflow = SimpleNamespace(executor_settings=SimpleNamespace(pass_command_as_script=False, array_execs=""))
    ex.job_array_task = False
    ex.logger = SimpleNamespace(debug=lambda *a: None)
    ex._steps, ex._steps_lock = {}, threading.Lock()
    reports = []
    ex.report_job_submission = lambda info: reports.append(("submitted", info.job.name))
    ex.report_job_success = lambda info: reports.append(("ok", info.job.name))
    ex.report_job_error = lambda info: reports.append(("error", info.job.name))
    commands = {"a": f"sleep 1; touch {tmp_path}/a", "b": f"sleep 1; touch {tmp_path}/b", "c": "exit 3"}
    ex.format_job_exec = lambda job: commands[job.name]
    start = time.monotonic()
    for name in commands:
        ex.run_job(SimpleNamespace(name=name, resources={}))
    assert time.monotonic() - start < 0.8  # run_job returned while the members run
    deadline = time.monotonic() + 10
    while len(reports) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(reports) == sorted(
        [("submitted", "a"), ("submitted", "b"), ("submitted", "c"), ("ok", "a"), ("ok", "b"), ("error", "c")]
    )
    assert time.monotonic() - start < 1.9  # side by side, not 2 s one after the other
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists() and not ex._steps


@pytest.fixture
def factory(monkeypatch):
    """Snakemake's GroupJobFactory, restored after the test; GroupJob a plain record of its jobs."""
    from snakemake import jobs as smk_jobs

    cls = smk_jobs.GroupJobFactory
    monkeypatch.setattr(cls, "new", cls.new)
    monkeypatch.setattr(cls, "smalldl_fresh_groups", False, raising=False)

    class FakeGroup:
        def __init__(self, id, jobs, resources):
            self.groupid, self.jobs = id, set(jobs)

    monkeypatch.setattr(smk_jobs, "GroupJob", FakeGroup)
    return cls


def test_the_group_mend_is_for_its_snakemake_version_only_and_names_the_upstream_issue(factory):
    """Installed on another Snakemake, the mend stays quiet until a group job is made (only where jobs are
    grouped), then fails loudly, pointing to the upstream issue to check."""
    assert groups.mend_group_jobs("9.28.0") is True
    with pytest.raises(groups.WorkflowError, match=r"check whether https://github.com/snakemake/snakemake/issues/"):
        factory().new("g", ["a"], None)
    import snakemake

    assert snakemake.__version__ == groups.MENDED_SNAKEMAKE  # the pinned Snakemake is the one mended
    groups.check_snakemake()


def test_the_mended_factory_makes_a_group_anew_when_its_cached_one_was_merged_since(factory):
    assert groups.mend_group_jobs(groups.MENDED_SNAKEMAKE) is True
    assert groups.mend_group_jobs(groups.MENDED_SNAKEMAKE) is False  # once per process
    f = factory()
    first = f.new("g", ["a", "b"], None)
    assert f.new("g", ["a", "b"], None) is first  # unchanged: Snakemake's cache, as before
    first.jobs |= {"c", "d"}  # group-components merged other groups into it in place
    again = f.new("g", ["a", "b"], None)
    assert again is not first and again.jobs == {"a", "b"}  # made from the jobs asked for


def test_the_mend_acts_only_where_jobs_are_grouped():
    """Snakemake makes group jobs (GroupJobFactory.new, where the mend and its guard act) only for rules in
    a group: no rule declares one, so only --groups / --group-components (the SLURM profiles) reach it; the
    workflow installs the plugin's mend and patches nothing itself."""
    root = Path(__file__).resolve().parents[2]
    for path in [root / "Snakefile", *sorted((root / "rules").glob("*.smk"))]:
        text = path.read_text()
        assert not re.search(r"^\s+group:", text, re.M), path
        assert "GroupJobFactory" not in text and "smk_jobs" not in text, path
    assert "mend_group_jobs()" in (root / "rules" / "common.smk").read_text()
