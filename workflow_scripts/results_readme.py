"""rule results_readme: results/README.md (the answer, findings, stage winners, headline numbers, source
models, files) and results/answer.html (the answer, for the report)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.results_readme(
        summary_parquet=smk.input.summary,
        seed_means_csv=smk.input.seed_means,
        stages_csv=smk.input.stages,
        curves_csv=smk.input.curves,
        table1_csv=smk.input.table1,
        comparisons_csv=smk.input.comparisons,
        findings_csv=smk.input.findings,
        sources_csv=smk.input.sources,
        answer_csv=smk.input.answer,
        figures=smk.params.figures,
        settings=smk.params.results,
        out_readme=smk.output.readme,
        out_answer_html=smk.output.answer,
    )


workflow.run(main, snakemake)  # noqa: F821
