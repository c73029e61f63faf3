"""rule compare: paired comparisons of recipes (comparisons.csv), stage winners with margins (stages.csv) and
the comparisons behind the answer (answer.csv)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.compare(
        summary_parquet=smk.input.summary,
        replicates_npz=smk.input.replicates,
        stage_files=list(smk.input.stages),
        figures=smk.params.figures,
        settings=smk.params.results,
        select_on=smk.params.select_on,
        out_comparisons=smk.output.comparisons,
        out_stages=smk.output.stages,
        out_answer=smk.output.answer,
    )


workflow.run(main, snakemake)  # noqa: F821
