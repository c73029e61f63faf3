"""rule pretrain: train a source model and save its body."""

import _bootstrap  # noqa: F401

from smalldl import workflow


def main(smk):
    from smalldl.jobs import pretrain  # here, not above: the job's process only hands this script to the fork server

    pretrain.pretrain(
        source=smk.wildcards.source,
        arch=smk.wildcards.arch,
        recipe_name=smk.params.recipe,
        task_name=smk.params.task_name,
        task=smk.params.task,
        settings=workflow.job_settings(smk.params.settings, smk.resources, smk.threads),
        global_seed=smk.params.seed,
        cache_npy=smk.input.cache,
        cache_meta=smk.input.cache_meta,
        split_parquet=smk.input.split,
        start_ckpt=smk.input.get("start"),
        out_ckpt=smk.output.model,
        out_metrics=smk.output.metrics,
        out_history=smk.output.history,
        threads=smk.threads,
    )


workflow.run(main, snakemake, workflow.TRAINING_MODULES)  # noqa: F821
