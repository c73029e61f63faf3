"""rule final_run: one seed of the recommended recipe at the largest size, trained again keeping its weights."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import final


def main(smk):
    final.final_run(study_metrics=smk.input.study_run, run=workflow.finetune_arguments(smk))


workflow.run(main, snakemake, workflow.TRAINING_MODULES)  # noqa: F821
