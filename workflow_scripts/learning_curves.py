"""rule learning_curves: AUC(n) fits per task and recipe and the size needed for the target AUC."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.learning_curves(
        summary_parquet=smk.input.summary,
        replicates_npz=smk.input.replicates,
        settings=smk.params.results,
        global_seed=smk.params.seed,
        out_csv=smk.output.csv,
    )


workflow.run(main, snakemake)  # noqa: F821
