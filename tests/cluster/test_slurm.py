"""The tiny study on a real SLURM cluster: tests/cluster/start_slurm.sh starts munged, slurmctld and slurmd
on this machine (one node, one partition with a time limit, a fake GPU) and the study runs through
`snakemake --profile profiles/slurm-local`. Its results must equal a local run's; its training jobs must
have asked the cluster for a GPU (and run on the CPU); its small jobs must have gone in groups that fit
the partition's time limit. The daemons are stopped afterwards, whatever happened, and must be gone.

Needs root on Debian/Ubuntu when slurm-wlm and munge are not installed yet (the script installs them
with apt-get); where it cannot start the cluster, the test fails saying why.
"""

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.cluster

SCRIPT = ROOT / "tests" / "cluster" / "start_slurm.sh"
PROFILE = ROOT / "profiles" / "slurm-local"
TINY = ROOT / "configs" / "tiny.yaml"
MAX_TIME = 300  # minutes: the test partition's MaxTime, enforced at submission (EnforcePartLimits=ALL)
GROUP_SIZE = 5  # group-components of the fine-tuning groups in profiles/slurm and profiles/slurm-local
TRAINING = ("rule_pretrain", "rule_lr_find", "rule_finetune", "group_finetune_")
RUN_KEYS = ("test_auc", "val_auc", "val_loss", "selected_epoch", "run_seed", "n_train", "n_test")


def run(cmd, env=None, cwd=None, timeout=1800):
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def snakemake(workdir, *args, env=None):
    """Start snakemake on the tiny study in workdir; finish() it."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(TINY), *args]
    log = open(workdir / "snakemake.out", "w")  # closed by finish()
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir), log


def finish(started, timeout=3600):
    proc, log = started
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    if proc.returncode != 0:
        out = Path(log.name).read_text()
        raise AssertionError(f"snakemake {' '.join(proc.args[3:])} failed ({proc.returncode}):\n{out[-8000:]}")


def daemon_pids(state: Path) -> dict[str, int]:
    files = {"munged": "munge/munged.pid", "slurmctld": "slurmctld.pid", "slurmd": "slurmd.pid"}
    return {name: int((state / f).read_text()) for name, f in files.items() if (state / f).is_file()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The running cluster: the environment that points its clients at it (SLURM_CONF)."""
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf"), "SLURM_TEST_MAXTIME": str(MAX_TIME)}
    started = run(["bash", str(SCRIPT), "start", str(state)], env=env, timeout=900)
    if started.returncode != 0:
        pytest.fail(
            f"could not start the test SLURM cluster ({SCRIPT.relative_to(ROOT)} start {state}):\n"
            f"{started.stdout[-3000:]}\n{started.stderr[-3000:]}",
            pytrace=False,
        )
    pids = daemon_pids(state)
    try:
        assert set(pids) == {"munged", "slurmctld", "slurmd"} and all(map(alive, pids.values())), pids
        yield env
    finally:
        stopped = run(["bash", str(SCRIPT), "stop", str(state)], env=env, timeout=300)
        left = {name: pid for name, pid in pids.items() if alive(pid)}
        assert stopped.returncode == 0 and not left, f"daemons left running {left}:\n{stopped.stdout}{stopped.stderr}"


@pytest.fixture(scope="module")
def studies(cluster, tmp_path_factory, request):
    """The tiny study run locally and on the cluster, side by side (the cluster run mostly waits); the local
    run is the session's (tests/conftest.py ``tiny_study``), which the workflow tests read too."""
    slurm = tmp_path_factory.mktemp("tiny_slurm")
    on_slurm = snakemake(slurm, "--profile", str(PROFILE), env=cluster)
    try:
        local = request.getfixturevalue("tiny_study")
    except BaseException:
        on_slurm[0].kill()  # its jobs are cancelled when the cluster stops
        on_slurm[0].wait()
        on_slurm[1].close()
        raise
    finish(on_slurm)
    return local, slurm


@pytest.fixture(scope="module")
def local_study(studies):
    return studies[0]


@pytest.fixture(scope="module")
def slurm_study(studies):
    return studies[1]


@pytest.fixture(scope="module")
def slurm_jobs(slurm_study, cluster):
    """Every job the cluster ran (finished jobs stay listed for MinJobAge = 1 h): scontrol's fields."""
    proc = run(["scontrol", "show", "job", "--oneliner"], env=cluster, timeout=60)
    assert proc.returncode == 0, proc.stderr
    jobs = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in proc.stdout.splitlines() if line.strip()]
    jobs = [j for j in jobs if j.get("WorkDir") == str(slurm_study)]
    assert jobs, proc.stdout[-2000:]
    return jobs


def minutes(limit: str) -> int:
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days) if days else 0) * 1440 + h * 60 + m + math.ceil(s / 60)


def runs(workdir: Path, radiomics=False) -> dict[str, dict]:
    """metrics.json of every fine-tuning run (runs/{task}/{arch}/{recipe}/n{n}/s{seed}), or radiomics run
    (runs/{task}/radiomics_{featureset}/{model}/n{n}/s{seed}), by folder under results/."""
    results = workdir / "results"
    found = {str(p.parent.relative_to(results)): p for p in (results / "runs").rglob("metrics.json")}
    return {
        run_dir: json.loads(path.read_text())
        for run_dir, path in found.items()
        if run_dir.split("/")[2].startswith("radiomics_") == radiomics
    }


def test_results_on_slurm_equal_a_local_run(local_study, slurm_study):
    local, slurm = runs(local_study), runs(slurm_study)
    assert local and set(slurm) == set(local)
    for run_dir, metrics in local.items():
        for key in RUN_KEYS:
            assert slurm[run_dir][key] == metrics[key], (run_dir, key)
        assert slurm[run_dir]["device"] == metrics["device"] == "cpu"  # the fake GPU is not a CUDA device
        pd.testing.assert_frame_equal(
            pd.read_parquet(slurm_study / "results" / run_dir / "predictions.parquet"),
            pd.read_parquet(local_study / "results" / run_dir / "predictions.parquet"),
        )
    local_radiomics, slurm_radiomics = runs(local_study, radiomics=True), runs(slurm_study, radiomics=True)
    assert set(slurm_radiomics) == set(local_radiomics)
    for run_dir, metrics in local_radiomics.items():
        assert slurm_radiomics[run_dir]["test_auc"] == metrics["test_auc"], run_dir
        pd.testing.assert_frame_equal(
            pd.read_parquet(slurm_study / "results" / run_dir / "predictions.parquet"),
            pd.read_parquet(local_study / "results" / run_dir / "predictions.parquet"),
        )
    decisions = sorted(p.relative_to(local_study) for p in (local_study / "results" / "stages").rglob("*.json"))
    for path in decisions:
        assert json.loads((slurm_study / path).read_text()) == json.loads((local_study / path).read_text()), path
    summary = [pd.read_csv(d / "results" / "summary.csv") for d in (local_study, slurm_study)]
    keys = ["task", "arch", "recipe", "n", "seed"]
    local_sum, slurm_sum = (s.sort_values(keys).reset_index(drop=True)[[*keys, "test_auc"]] for s in summary)
    pd.testing.assert_frame_equal(slurm_sum, local_sum)


def test_training_jobs_asked_the_cluster_for_a_gpu(slurm_jobs):
    assert {j["JobState"] for j in slurm_jobs} == {"COMPLETED"}
    training = [j for j in slurm_jobs if any(t in j["StdOut"] for t in TRAINING)]
    others = [j for j in slurm_jobs if j not in training]
    assert training and others
    for job in training:
        assert "gres:gpu:1" in job.get("TresPerJob", ""), job["StdOut"]  # --gpus=1
    for job in others:  # data, splits, results: CPU only
        assert "gpu" not in job.get("TresPerJob", ""), job["StdOut"]


def test_small_jobs_went_in_groups_within_the_time_limit(slurm_study, slurm_jobs):
    # fine-tuning runs of one (task, arch, recipe), GROUP_SIZE to a submission
    per_recipe = Counter(run_dir.rsplit("/", 2)[0] for run_dir in runs(slurm_study))
    finetune_groups = [j for j in slurm_jobs if "/group_finetune_" in j["StdOut"]]
    assert not [j for j in slurm_jobs if "/rule_finetune/" in j["StdOut"]]
    assert len(finetune_groups) == sum(math.ceil(k / GROUP_SIZE) for k in per_recipe.values())
    assert len(finetune_groups) < sum(per_recipe.values())
    # the training subsets of a target: one submission (tiny has fewer than 8 per target)
    subset_groups = [j for j in slurm_jobs if "/group_subsets_" in j["StdOut"]]
    assert len(subset_groups) == len({run_dir.split("/")[1] for run_dir in runs(slurm_study)})
    assert not [j for j in slurm_jobs if "/rule_subset/" in j["StdOut"]]
    # radiomics: the models of one (task, feature set, n, seed) and the pick of the best, one submission
    best = [r for r in runs(slurm_study, radiomics=True) if r.split("/")[3] == "best"]
    radiomics_groups = [j for j in slurm_jobs if "/group_radiomics_" in j["StdOut"]]
    assert best and len(radiomics_groups) == len(best)
    assert not [j for j in slurm_jobs if re.search(r"/rule_radiomics_(model|best)/", j["StdOut"])]
    # a group asks for the sum of its members' runtimes (the plugin runs them one at a time), within MaxTime
    train_runtime = 60  # configs/tiny.yaml: the schema's default train.runtime
    for job in slurm_jobs:
        assert minutes(job["TimeLimit"]) <= MAX_TIME, job["StdOut"]
    assert max(minutes(j["TimeLimit"]) for j in finetune_groups) == train_runtime * min(
        GROUP_SIZE, max(per_recipe.values())
    )
    # CPU-only members too: a target's subsets (10 min each), a radiomics group's two models (the
    # schema's radiomics.runtime, 120 min each) and the pick of the best (10 min)
    subsets = {}  # target -> its training subsets (n, seed)
    for run_dir in runs(slurm_study):
        parts = run_dir.split("/")
        subsets.setdefault(parts[1], set()).add((parts[4], parts[5]))
    assert sorted(minutes(j["TimeLimit"]) for j in subset_groups) == sorted(10 * len(s) for s in subsets.values())
    assert {minutes(j["TimeLimit"]) for j in radiomics_groups} == {2 * 120 + 10}


PREEMPT_RUN = "results/runs/emphysema/efficientnet_lite0/onecycle-finetune-none-default/n40/s0"


def test_a_cancelled_training_job_is_resubmitted_and_resumes_from_its_checkpoint(cluster, tmp_path):
    """Preemption: scancel (SIGTERM, then SIGKILL) a training job after its first epoch checkpoint; with
    retries, Snakemake resubmits it, the new job resumes from resume.pt, and the metrics equal an
    uninterrupted local run's."""
    import shutil
    import time

    extra = tmp_path / "longer.yaml"
    extra.write_text("train: {epochs: 8}\nstudy: {recipes: [onecycle-finetune-none-default], stages: null}\n")
    local = tmp_path / "local"
    local.mkdir()
    args = ["--configfile", str(TINY), str(extra), "--", f"{PREEMPT_RUN}/metrics.json"]
    finish(snakemake(local, "--cores", "2", *args))
    reference = json.loads((local / PREEMPT_RUN / "metrics.json").read_text())
    work = tmp_path / "slurm"
    shutil.copytree(local, work, symlinks=True)  # data, splits and subsets in place (mtimes kept)
    for name in ("metrics.json", "predictions.parquet", "history.csv"):
        (work / PREEMPT_RUN / name).unlink()
    started = snakemake(work, "--profile", str(PROFILE), "--retries", "1", *args, env=cluster)
    resume = work / PREEMPT_RUN / "resume.pt"
    cancelled = None
    deadline = time.time() + 900
    while time.time() < deadline and started[0].poll() is None and cancelled is None:
        if resume.exists():
            ids = run(["squeue", "-h", "-o", "%i"], env=cluster).stdout.split()
            assert len(ids) == 1, ids
            assert run(["scancel", ids[0]], env=cluster).returncode == 0
            cancelled = ids[0]
        time.sleep(0.1)
    finish(started)
    assert cancelled is not None, "the training job finished before it could be cancelled"
    log = work / "logs" / "finetune" / "emphysema" / "efficientnet_lite0" / "onecycle-finetune-none-default"
    text = (log / "n40_s0.log").read_text()
    assert re.search(rf"resumed from {PREEMPT_RUN}/resume.pt after epoch [1-7]\b", text), text[-3000:]
    resumed = json.loads((work / PREEMPT_RUN / "metrics.json").read_text())
    for key in ("test_auc", "test_auc_tta", "val_auc", "selected_epoch", "selected_state_sha256"):
        assert resumed[key] == reference[key], key
    assert not resume.exists()


def test_a_gpu_group_runs_its_members_side_by_side_on_one_gpu(cluster, tmp_path):
    """jobs_per_gpu 2 (tests/cluster/side_by_side.smk: four 15-s runs of one group under
    profiles/slurm-local): the group job asks for one GPU, two members' CPUs and memory and 2 x runtime,
    and its members run two at a time, each seeing that GPU."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "tests" / "cluster" / "side_by_side.smk")]
    cmd += ["--directory", str(tmp_path), "--profile", str(PROFILE)]
    done = run(cmd, env=cluster, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    records = [p.read_text().split() for p in sorted((tmp_path / "results" / "runs").rglob("*.txt"))]
    assert len(records) == 4
    spans = [(float(r[1]), float(r[5])) for r in records]  # start <t> gpus=<g> job=<id> end <t>
    gpus, jobs = {r[2] for r in records}, {r[3] for r in records}
    assert len(jobs) == 1 and len(gpus) == 1 and gpus != {"gpus=none"}, records  # one submission, one GPU
    # how many ran at once, at every start: two, never three (plain slurm plugin: always one)
    at_once = [sum(s <= start < e for s, e in spans) for start, _ in spans]
    assert max(at_once) == 2, spans
    proc = run(["scontrol", "show", "job", "--oneliner", jobs.pop().removeprefix("job=")], env=cluster, timeout=60)
    job = dict(re.findall(r"(\w+)=(\S*)", proc.stdout))
    assert minutes(job["TimeLimit"]) == 2 * 3, job  # ceil(4 / 2) layers x runtime 3 min, not 4 x 3
    assert job["NumCPUs"] == "2" and "gres:gpu:1" in job["TresPerJob"], job
