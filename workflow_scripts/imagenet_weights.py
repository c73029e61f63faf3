"""rule imagenet_weights: published ImageNet weights of one architecture as a source checkpoint."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    jobs.imagenet_weights(smk.config, smk.wildcards.source, smk.wildcards.arch, smk.output.model, smk.output.metrics)


workflow.run(main, snakemake)  # noqa: F821
