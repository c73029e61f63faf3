"""rule fetch_nih: download NIH ChestX-ray14 (resumable, checksummed) or verify a local copy."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import data


def main(smk):
    data.fetch_nih(dataset_name=smk.wildcards.dataset, dataset=smk.params.dataset, out_json=smk.output.fetched)


workflow.run(main, snakemake)  # noqa: F821
