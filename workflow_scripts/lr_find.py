"""rule lr_find: the lr finder sweep of one (task, arch, recipe) at the tuning size."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import train


def main(smk):
    train.lr_find(
        **workflow.training_arguments(smk),
        out_csv=smk.output.csv,
        out_json=smk.output.json,
        out_png=smk.output.png,
    )


workflow.run(main, snakemake, workflow.TRAINING_MODULES)  # noqa: F821
