"""rule lr_find: the lr finder sweep of one (task, arch, recipe) at the tuning size."""

import _bootstrap  # noqa: F401

from smalldl import workflow


def main(smk):
    from smalldl.jobs import train  # here, not above: the job's process only hands this script to the fork server

    train.lr_find(
        **workflow.training_arguments(smk),
        out_csv=smk.output.csv,
        out_json=smk.output.json,
        out_png=smk.output.png,
    )


workflow.run(main, snakemake, workflow.TRAINING_MODULES)  # noqa: F821
