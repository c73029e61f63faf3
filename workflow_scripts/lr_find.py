"""rule lr_find: the lr finder sweep of one (task, arch, recipe) at the tuning size."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    w = smk.wildcards
    jobs.lr_find(
        smk.config,
        w.task,
        w.arch,
        w.recipe,
        smk.input.cache,
        smk.input.cache_meta,
        smk.input.split,
        smk.input.subset,
        smk.input.get("source"),
        smk.output.csv,
        smk.output.json,
        smk.output.png,
        threads=smk.threads,
    )


workflow.run(main, snakemake)  # noqa: F821
