"""rule cache: decode + resize every image once into a uint8 memmap."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import data


def main(smk):
    data.cache(
        index_parquet=smk.input.index,
        out_npy=smk.output.cache,
        out_meta=smk.output.meta,
        width=int(smk.wildcards.width),
        aspect=smk.params.aspect,
        workers=smk.threads,
        dataset_name=smk.wildcards.dataset,
        max_pixels=int(smk.resources.max_pixels),
        min_side=int(smk.resources.min_side),
    )


workflow.run(main, snakemake)  # noqa: F821
