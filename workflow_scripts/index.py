"""rule index: the uniform index table of one dataset (synthetic, ChestX-ray14, a local copy)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import data


def main(smk):
    data.index(
        dataset_name=smk.wildcards.dataset,
        dataset=smk.params.dataset,
        out_parquet=smk.output.index,
        raw=smk.input.get("raw"),
        fetched=smk.input.get("fetched"),
    )


workflow.run(main, snakemake)  # noqa: F821
