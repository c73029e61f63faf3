"""rule subset: the training subset of size n for one seed (nested in larger n)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import splits


def main(smk):
    splits.subset(
        task_name=smk.wildcards.task,
        task=smk.params.task,
        global_seed=smk.params.seed,
        split_parquet=smk.input.split,
        n=int(smk.wildcards.n),
        seed=int(smk.wildcards.seed),
        out_csv=smk.output.subset,
        out_json=smk.output.info,
    )


workflow.run(main, snakemake)  # noqa: F821
