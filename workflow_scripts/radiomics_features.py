"""rule radiomics_features: one feature set of a dataset's cached images, once per image."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import radiomics


def _paths(value):
    return [value] if isinstance(value, str) else list(value)


def main(smk):
    radiomics.radiomics_features(
        featureset=smk.wildcards.featureset,
        cache_npy=smk.input.cache,
        cache_meta=smk.input.cache_meta,
        split_parquets=_paths(smk.input.get("splits", [])),
        subset_csvs=_paths(smk.input.get("subsets", [])),
        images=smk.params.images,
        settings=dict(smk.params.settings),
        out_parquet=smk.output.features,
        threads=smk.threads,
    )


workflow.run(main, snakemake)  # noqa: F821
