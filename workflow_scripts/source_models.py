"""rule source_models: each source model's chain and validation AUC with its CI (source_models.csv)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.source_models(metas=list(smk.input.metas), settings=smk.params.results, out_csv=smk.output.csv)


workflow.run(main, snakemake)  # noqa: F821
