"""rule aggregate: one row per run in results/summary.{parquet,csv}."""

import _bootstrap  # noqa: F401

from smalldl import results, workflow


def main(smk):
    table = results.read_metrics(smk.input.metrics)
    results.write_summary(table, smk.output.parquet, smk.output.csv)
    print(results.mean_table(table).to_string(index=False))


workflow.run(main, snakemake)  # noqa: F821
