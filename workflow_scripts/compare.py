"""rule compare: paired comparisons of recipes (comparisons.csv) and stage winners with margins (stages.csv)."""

import _bootstrap  # noqa: F401

from smalldl import results, workflow


def main(smk):
    results.compare_job(
        smk.input.summary,
        smk.input.replicates,
        list(smk.input.stages),
        smk.params.figures,
        smk.params.results,
        smk.params.select_on,
        smk.params.seed,
        smk.output.comparisons,
        smk.output.stages,
    )


workflow.run(main, snakemake)  # noqa: F821
