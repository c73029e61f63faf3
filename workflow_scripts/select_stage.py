"""checkpoint select_stage: the winner of one stage on validation AUC (mean over sizes and seeds)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import train


def main(smk):
    train.select_stage(
        task_name=smk.wildcards.task,
        arch=smk.wildcards.arch,
        stage=int(smk.wildcards.k),
        stages=smk.params.stages,
        previous=smk.params.previous,
        metrics_paths=list(smk.input.metrics),
        out_json=smk.output.json,
    )


workflow.run(main, snakemake)  # noqa: F821
