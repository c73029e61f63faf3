"""rule index: the uniform index table of one dataset (synthetic, ChestX-ray14, a local copy)."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    jobs.index_dataset(
        smk.wildcards.dataset,
        smk.params.dataset,
        smk.output[0],
        raw=smk.input.get("raw"),
        fetched=smk.input.get("fetched"),
    )


workflow.run(main, snakemake)  # noqa: F821
