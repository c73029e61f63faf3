"""rule fetch_nih: download NIH ChestX-ray14 (resumable, checksummed) or verify a local copy."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    jobs.fetch_dataset(smk.wildcards.dataset, smk.params.dataset, smk.output[0])


workflow.run(main, snakemake)  # noqa: F821
