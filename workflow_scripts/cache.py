"""rule cache: decode + resize every image once into a uint8 memmap."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    jobs.make_cache(
        smk.input.index,
        smk.output.cache,
        smk.output.meta,
        width=int(smk.wildcards.width),
        aspect=smk.params.aspect,
        workers=smk.threads,
    )


workflow.run(main, snakemake)  # noqa: F821
