"""rule table1: images, patients and positives per task, label and split (results/table1.csv)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.table1(
        manifests=dict(smk.input.items()),
        targets=smk.params.targets,
        tasks=smk.params.tasks,
        sizes=smk.params.sizes,
        out_csv=smk.output.csv,
    )


workflow.run(main, snakemake)  # noqa: F821
