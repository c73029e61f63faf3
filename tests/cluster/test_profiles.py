"""The SLURM profiles without a cluster: profiles/slurm-local groups exactly like profiles/slurm (so the
cluster test exercises the real profile's grouping), and a dry run of the demo under profiles/slurm plans
fewer submissions than jobs, each fine-tuning group holding at most 5 runs of one (task, arch, recipe)."""

import math
from collections import Counter

import pytest
import yaml

from ..conftest import ROOT, load_script

pytestmark = pytest.mark.cluster

SHARED = ("groups", "group-components", "resources", "set-resource-scopes")


def profile(name):
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def dag_build():
    return load_script("benchmarks/dag_build.py")


def test_local_test_profile_groups_like_the_real_one():
    real, local = profile("slurm"), profile("slurm-local")
    # slurm-groups (snakemake_executor_plugin_slurm_groups): the slurm plugin, but GPU groups share GPUs
    assert real["executor"] == local["executor"] == "slurm-groups"
    assert not [
        key
        for profile in (real, local)
        for key in profile
        if key.startswith("slurm-") and not key.startswith("slurm-groups-")
    ]
    for key in SHARED:
        assert local[key] == real[key], key
    # the plugin runs a group's members one at a time (--jobs 1): every grouped rule takes the group's
    # one turn, so that Snakemake asks for the sum of their runtimes, not for a round run side by side;
    # slurm-groups gives a fine-tuning group on GPUs train.jobs_per_gpu turns (the rule declares it)
    assert real["resources"] == {"group_turn": 1} and real["set-resource-scopes"] == {"group_turn": "local"}
    for rule in real["groups"]:
        assert real["set-resources"][rule]["group_turn"] == local["set-resources"][rule]["group_turn"] == 1, rule
    assert real["group-components"]["finetune_{task}_{arch}_{recipe}"] == 5
    # the test cluster has no accounting: status via squeue
    assert local["slurm-groups-status-command"] == "squeue"
    for rule in ("finetune", "lr_find", "pretrain"):
        assert local["set-resources"][rule]["gpu"] == 1
    finetune = (ROOT / "rules" / "train.smk").read_text().split("rule finetune:")[1].split("\nrule ")[0]
    assert 'jobs_per_gpu=TRAIN_JOB["jobs_per_gpu"]' in finetune  # a resource (rules/train.smk), never a param


def test_grouping_plans_fewer_submissions_for_the_demo(tmp_path):
    bench = dag_build()
    dry_run = [tmp_path, "-n", "--profile", str(ROOT / "profiles" / "slurm")]
    out = bench.snakemake(*dry_run)[0]
    plan = bench.plan(out)
    finetune_runs = Counter()
    for sub in plan:
        rules = {job["rule"] for job in sub["jobs"]}
        if "finetune" in rules:
            assert sub["group"] and rules == {"finetune"}, sub
            keys = {tuple(job["wildcards"][k] for k in ("task", "arch", "recipe")) for job in sub["jobs"]}
            assert len(keys) == 1 and 1 <= len(sub["jobs"]) <= 5, sub
            assert sub["group"] == "finetune_{}_{}_{}".format(*keys.pop())
            finetune_runs[sub["group"]] += len(sub["jobs"])
        if "subset" in rules:
            assert sub["group"] and rules == {"subset"} and len(sub["jobs"]) <= 8, sub
        if rules & {"radiomics_model", "radiomics_best"}:
            assert sub["group"] and rules == {"radiomics_model", "radiomics_best"}, sub
            assert len({(j["wildcards"]["n"], j["wildcards"]["seed"]) for j in sub["jobs"]}) == 1, sub
    assert finetune_runs
    # no job in two submissions: the demo's stages make Snakemake plan the DAG again (checkpoints), which
    # without the fix of its group cache (snakemake_executor_plugin_slurm_groups.mend_group_jobs) gave
    # overlapping groups of 6 under group-components 5
    members = [(job["rule"], tuple(sorted(job["wildcards"].items()))) for sub in plan for job in sub["jobs"]]
    assert len(members) == len(set(members))
    finetune_groups = sum(1 for sub in plan if sub["group"] in finetune_runs)
    assert finetune_groups == sum(math.ceil(k / 5) for k in finetune_runs.values())
    ungrouped = bench.snakemake(*dry_run, "--groups", "no_such_rule=none")[0]
    assert len(plan) < len(bench.plan(ungrouped)) == bench.job_count(out) - 1  # `all` runs in the main process
