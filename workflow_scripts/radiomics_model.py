"""rule radiomics_model: one (task, featureset, model, n, seed) classical model, tuned by CV, tested."""

import _bootstrap  # noqa: F401

from smalldl import workflow


def main(smk):
    from smalldl.jobs import radiomics  # here, not above: the job's process only hands this script to the fork server

    w = smk.wildcards
    radiomics.radiomics_model(
        task_name=w.task,
        task=smk.params.task,
        global_seed=smk.params.seed,
        featureset=w.featureset,
        model=w.model,
        n=int(w.n),
        seed=int(w.seed),
        settings=dict(smk.params.settings),
        features_parquet=smk.input.features,
        split_parquet=smk.input.split,
        subset_csv=smk.input.subset,
        out_metrics=smk.output.metrics,
        out_predictions=smk.output.predictions,
        threads=smk.threads,
    )


workflow.run(main, snakemake, workflow.RADIOMICS_MODULES)  # noqa: F821
