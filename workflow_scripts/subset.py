"""rule subset: the training subset of size n for one seed (nested in larger n)."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    w = smk.wildcards
    jobs.make_subset(smk.config, w.task, smk.input.split, int(w.n), int(w.seed), smk.output.subset, smk.output.info)


workflow.run(main, snakemake)  # noqa: F821
