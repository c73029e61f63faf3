"""rule index: check a raw dataset's index CSV and write index/{dataset}.parquet."""

from pathlib import Path

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    jobs.make_index(Path(smk.input.raw) / "index.csv", smk.output[0])


workflow.run(main, snakemake)  # noqa: F821
