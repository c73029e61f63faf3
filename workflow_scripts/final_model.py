"""rule final_model: results/final/{task}/ (export, test predictions, model card) and its figures."""

import _bootstrap  # noqa: F401

from smalldl import workflow


def main(smk):
    from smalldl.jobs import final  # here, not above: the job's process only hands this script to the fork server

    final.final_model(
        task_name=smk.wildcards.task,
        task=smk.params.task,
        seeds=smk.params.seeds,
        n=smk.params.n,
        settings=smk.params.settings,
        results=smk.params.results,
        global_seed=smk.params.seed,
        max_pixels=int(smk.resources.max_pixels),
        min_side=int(smk.resources.min_side),
        answer_csv=smk.input.answer,
        run_models=smk.input.models,
        run_metrics=smk.input.metrics,
        seed_means_csv=smk.input.seed_means,
        split_parquet=smk.input.split,
        index_parquet=smk.input.index,
        cache_meta=smk.input.cache_meta,
        out_model=smk.output.model,
        out_metrics=smk.output.metrics,
        out_predictions=smk.output.predictions,
        out_card=smk.output.card,
        out_html=smk.output.html,
        out_cam=smk.output.cam,
        out_reliability=smk.output.reliability,
    )


workflow.run(main, snakemake, workflow.TRAINING_MODULES)  # noqa: F821
