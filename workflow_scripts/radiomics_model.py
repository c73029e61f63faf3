"""rule radiomics_model: one (task, featureset, model, n, seed) classical model, tuned by CV, tested."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    w = smk.wildcards
    jobs.radiomics_model(
        smk.config,
        w.task,
        w.featureset,
        w.model,
        int(w.n),
        int(w.seed),
        dict(smk.params.settings),
        smk.input.features,
        smk.input.split,
        smk.input.subset,
        smk.output.metrics,
        smk.output.predictions,
        threads=smk.threads,
    )


workflow.run(main, snakemake)  # noqa: F821
