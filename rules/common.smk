# Wildcards, paths and input functions shared by the rules. Everything here is cheap to evaluate:
# the DAG is built without importing torch.

from smalldl.utils import derive_seed

WIDTH = config["preprocess"]["width"]
STUDY = config["study"]


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    task=r"[A-Za-z0-9_]+",
    source=r"[A-Za-z0-9_]+",
    arch=r"[A-Za-z0-9_.]+",
    recipe=r"[a-z]+-[a-z]+-[A-Za-z0-9_]+-[a-z]+",
    n=r"\d+",
    seed=r"\d+",
    fmt=r"png|pdf|svg",


def cfg_seed(*keys):
    """A seed for one draw, derived from the global seed and the draw's keys."""
    return derive_seed(config["seed"], *keys)


def dataset_of(task):
    return config["tasks"][task]["dataset"]


def cache_files(dataset):
    return {
        "cache": f"cache/{dataset}/w{WIDTH}.npy",
        "cache_meta": f"cache/{dataset}/w{WIDTH}.json",
    }


def subset_paths(task):
    """Training subsets of a task for the study's sizes and seeds (targets only)."""
    if task not in STUDY["targets"]:
        return []
    return expand(
        "splits/{task}/train_n{n}_s{seed}.csv",
        task=task,
        n=STUDY["sizes"],
        seed=STUDY["seeds"],
    )


def split_inputs(wildcards):
    """A task's index, plus the splits and subsets of every task whose patients it must avoid."""
    task = config["tasks"][wildcards.task]
    inputs = {"index": f"index/{task['dataset']}.parquet"}
    for i, other in enumerate(task["exclude_patients_of"]):
        inputs[f"exclude_split_{i}"] = f"splits/{other}/split.parquet"
        for j, path in enumerate(subset_paths(other)):
            inputs[f"exclude_subset_{i}_{j}"] = path
    return inputs


def pretrain_inputs(wildcards):
    task = config["sources"][wildcards.source]["task"]
    return {"split": f"splits/{task}/split.parquet", **cache_files(dataset_of(task))}


def finetune_inputs(wildcards):
    recipe = cfg.Recipe.parse(wildcards.recipe, config.get("sources", {}))
    inputs = {
        "split": f"splits/{wildcards.task}/split.parquet",
        "subset": f"splits/{wildcards.task}/train_n{wildcards.n}_s{wildcards.seed}.csv",
        **cache_files(dataset_of(wildcards.task)),
    }
    if recipe.source != cfg.NO_SOURCE:
        inputs["source"] = f"models/source/{recipe.source}/{wildcards.arch}.pt"
    return inputs


def run_metrics():
    return [
        "runs/{task}/{arch}/{recipe}/n{n}/s{seed}/metrics.json".format(**run)
        for run in cfg.runs(config)
    ]


def figure_paths():
    return expand("results/figures/auc_vs_n.{fmt}", fmt=config["plots"]["formats"])


def all_results():
    """Every run is a target itself: Snakemake does not regenerate a missing intermediate file whose
    consumers are up to date, and deleting one run's output must rerun that run."""
    return [*run_metrics(), "results/summary.csv", "results/summary.parquet", *figure_paths()]
