"""rule final_run: one seed of the recommended recipe at the largest size, trained again keeping its weights."""

import _bootstrap  # noqa: F401

from smalldl import workflow


def main(smk):
    from smalldl.jobs import final  # here, not above: the job's process only hands this script to the fork server

    final.final_run(study_metrics=smk.input.study_run, run=workflow.finetune_arguments(smk))


workflow.run(main, snakemake, workflow.TRAINING_MODULES)  # noqa: F821
