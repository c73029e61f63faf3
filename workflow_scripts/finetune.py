"""rule finetune: one (task, arch, recipe, n, seed) run: train, select on val loss, test."""

import _bootstrap  # noqa: F401

from smalldl import workflow


def main(smk):
    from smalldl.jobs import train  # here, not above: the job's process only hands this script to the fork server

    train.finetune(**workflow.finetune_arguments(smk))


workflow.run(main, snakemake, workflow.TRAINING_MODULES)  # noqa: F821
