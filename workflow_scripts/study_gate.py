"""rule study_gate: no source model of the study saw a patient or an image of a target's validation or
test set; every training job of the study waits for it."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import splits


def main(smk):
    splits.study_gate(
        pairs=smk.params.pairs,
        task_datasets=smk.params.tasks,
        split_parquets=dict(zip(smk.params.tasks, smk.input.splits, strict=True)),
        index_parquets=dict(zip(smk.params.datasets, smk.input.indexes, strict=True)),
        out_json=smk.output.json,
    )


workflow.run(main, snakemake)  # noqa: F821
