"""rule bootstrap: each run's test AUC with a bootstrap CI, means over seeds with CIs, the replicates."""

import _bootstrap  # noqa: F401

from smalldl import results, workflow


def main(smk):
    results.bootstrap_job(
        smk.input.summary,
        smk.params.results,
        smk.params.seed,
        smk.output.run_ci,
        smk.output.seed_means,
        smk.output.replicates,
    )


workflow.run(main, snakemake)  # noqa: F821
