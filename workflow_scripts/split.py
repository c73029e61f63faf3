"""rule split: patient-level train/val/test split of one task."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import splits


def main(smk):
    task = smk.params.task
    splits.split(
        task_name=smk.wildcards.task,
        task=task,
        global_seed=smk.params.seed,
        index_parquet=smk.input.index,
        excluded_from=splits.excluded_inputs(smk.input, len(task["exclude_patients_of"])),
        out_split=smk.output.split,
        out_manifest=smk.output.manifest,
    )


workflow.run(main, snakemake)  # noqa: F821
