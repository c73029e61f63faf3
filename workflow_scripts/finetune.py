"""rule finetune: one (task, arch, recipe, n, seed) run: train, select on val loss, test."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    w = smk.wildcards
    jobs.finetune(
        smk.config,
        w.task,
        w.arch,
        w.recipe,
        int(w.n),
        int(w.seed),
        smk.input.cache,
        smk.input.cache_meta,
        smk.input.split,
        smk.input.subset,
        smk.input.get("source"),
        smk.output.metrics,
        smk.output.predictions,
        smk.output.history,
        threads=smk.threads,
        lr_json=smk.input.get("lr"),
    )


workflow.run(main, snakemake)  # noqa: F821
