"""rule aggregate: one row per run in results/summary.{parquet,csv}."""

import _bootstrap  # noqa: F401

from smalldl import results, workflow


def main(smk):
    table = results.aggregate(
        list(smk.input.metrics),
        smk.output.parquet,
        smk.output.csv,
        metric=smk.params.metric,
        select_on=smk.params.select_on,
        workers=max(4, smk.threads),
    )
    print(f"{len(table)} runs")
    if len(table):
        print(results.mean_table(table).to_string(index=False))


workflow.run(main, snakemake)  # noqa: F821
