"""rule bootstrap: each run's test AUC with a bootstrap CI, means over seeds with CIs, the replicates (test, and
the CNN runs' validation AUCs), resampling patients."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.bootstrap(
        summary_parquet=smk.input.summary,
        split_parquets=list(smk.input.splits),
        settings=smk.params.results,
        select_on=smk.params.select_on,
        global_seed=smk.params.seed,
        out_run_ci=smk.output.run_ci,
        out_seed_means=smk.output.seed_means,
        out_replicates=smk.output.replicates,
    )


workflow.run(main, snakemake)  # noqa: F821
