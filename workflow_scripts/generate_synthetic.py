"""rule generate_synthetic: write a synthetic dataset (PNGs + index.csv)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import data


def main(smk):
    data.generate_synthetic(
        dataset=smk.params.dataset, out_dir=smk.output.raw, seed=smk.params.seed, workers=smk.threads
    )


workflow.run(main, snakemake)  # noqa: F821
