"""checkpoint select_stage: the winner of one stage on validation AUC (mean over sizes and seeds)."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    w = smk.wildcards
    jobs.select_stage(smk.config, w.task, w.arch, int(w.k), smk.params.previous, smk.input.metrics, smk.output.json)


workflow.run(main, snakemake)  # noqa: F821
