"""rule radiomics_best: the radiomics model with the highest validation AUC per (task, featureset, n, seed)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import radiomics


def main(smk):
    radiomics.radiomics_best(
        model_metrics=list(smk.input.metrics),
        model_predictions=list(smk.input.predictions),
        out_metrics=smk.output.metrics,
        out_predictions=smk.output.predictions,
    )


workflow.run(main, snakemake)  # noqa: F821
