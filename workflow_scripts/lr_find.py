"""rule lr_find: the lr finder sweep of one (task, arch, recipe) at the tuning size."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import train


def main(smk):
    w = smk.wildcards
    train.lr_find(
        task_name=w.task,
        task=smk.params.task,
        arch=w.arch,
        recipe_name=w.recipe,
        settings=workflow.job_settings(smk.params.settings, smk.resources, smk.threads),
        global_seed=smk.params.seed,
        cache_npy=smk.input.cache,
        cache_meta=smk.input.cache_meta,
        split_parquet=smk.input.split,
        subset_csv=smk.input.subset,
        source_ckpt=smk.input.get("source"),
        out_csv=smk.output.csv,
        out_json=smk.output.json,
        out_png=smk.output.png,
        threads=smk.threads,
    )


workflow.run(main, snakemake, workflow.TRAINING_MODULES)  # noqa: F821
