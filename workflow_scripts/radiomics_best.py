"""rule radiomics_best: the radiomics model with the highest validation AUC per (task, featureset, n, seed)."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    jobs.radiomics_best(
        list(smk.input.metrics),
        list(smk.input.predictions),
        smk.output.metrics,
        smk.output.predictions,
    )


workflow.run(main, snakemake)  # noqa: F821
