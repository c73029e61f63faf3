"""rule learning_curves: AUC(n) fits per task and recipe and the size needed for the target AUC."""

import _bootstrap  # noqa: F401

from smalldl import results, workflow


def main(smk):
    table = results.learning_curves_job(smk.input.summary, smk.params.results, smk.params.seed, smk.output.csv)
    print(table.to_string(index=False))


workflow.run(main, snakemake)  # noqa: F821
