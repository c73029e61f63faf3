"""rule finetune: one (task, arch, recipe, n, seed) run: train, select on val loss, test."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import train


def main(smk):
    train.finetune(**workflow.finetune_arguments(smk))


workflow.run(main, snakemake, workflow.TRAINING_MODULES)  # noqa: F821
