"""rule generate_synthetic: write a synthetic dataset (PNGs + index.csv)."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    ds = smk.params.dataset
    jobs.generate(ds["kind"], ds["params"], smk.output[0], seed=smk.params.seed, workers=smk.threads)


workflow.run(main, snakemake)  # noqa: F821
