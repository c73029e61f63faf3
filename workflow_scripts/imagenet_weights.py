"""rule imagenet_weights: published ImageNet weights of one architecture as a source checkpoint."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import pretrain


def main(smk):
    pretrain.imagenet_weights(
        source=smk.wildcards.source,
        arch=smk.wildcards.arch,
        files=smk.params.files,
        versions=smk.params.versions,
        out_ckpt=smk.output.model,
        out_metrics=smk.output.metrics,
    )


workflow.run(main, snakemake)  # noqa: F821
