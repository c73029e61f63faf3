"""rule aggregate: one row per run in results/summary.{parquet,csv}."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.aggregate(
        metrics=list(smk.input.metrics),
        out_parquet=smk.output.parquet,
        out_csv=smk.output.csv,
        metric=smk.params.metric,
        select_on=smk.params.select_on,
        threads=smk.threads,
    )


workflow.run(main, snakemake)  # noqa: F821
