"""rule pretrain: train a source model and save its body."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    jobs.pretrain(
        smk.config,
        smk.wildcards.source,
        smk.wildcards.arch,
        smk.params.settings,
        smk.input.cache,
        smk.input.cache_meta,
        smk.input.split,
        smk.output.model,
        smk.output.metrics,
        smk.output.history,
        threads=smk.threads,
    )


workflow.run(main, snakemake)  # noqa: F821
