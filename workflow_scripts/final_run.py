"""rule final_run: one seed of the recommended recipe at the largest size, trained again keeping its weights."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import final


def main(smk):
    w = smk.wildcards
    final.final_run(
        study_metrics=smk.input.study_run,
        task_name=w.task,
        task=smk.params.task,
        arch=w.arch,
        recipe_name=w.recipe,
        n=int(w.n),
        seed=int(w.seed),
        settings=workflow.job_settings(smk.params.settings, smk.resources, smk.threads),
        global_seed=smk.params.seed,
        cache_npy=smk.input.cache,
        cache_meta=smk.input.cache_meta,
        split_parquet=smk.input.split,
        subset_csv=smk.input.subset,
        source_ckpt=smk.input.get("source"),
        lr_json=smk.input.get("lr"),
        out_metrics=smk.output.metrics,
        out_predictions=smk.output.predictions,
        out_val_predictions=smk.output.val_predictions,
        out_history=smk.output.history,
        threads=smk.threads,
    )


workflow.run(main, snakemake, workflow.TRAINING_MODULES)  # noqa: F821
