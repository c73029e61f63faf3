"""rule radiomics_features: one feature set of a dataset's cached images, once per image."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def _paths(value):
    return [value] if isinstance(value, str) else list(value)


def main(smk):
    jobs.radiomics_features(
        smk.wildcards.featureset,
        smk.input.cache,
        smk.input.cache_meta,
        _paths(smk.input.get("splits", [])),
        _paths(smk.input.get("subsets", [])),
        smk.params.images,
        dict(smk.params.settings),
        smk.output.features,
        threads=smk.threads,
    )


workflow.run(main, snakemake)  # noqa: F821
