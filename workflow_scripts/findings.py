"""rule findings: the paper's claims tested on the study's runs (findings.csv)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.findings(
        summary_parquet=smk.input.summary,
        replicates_npz=smk.input.replicates,
        comparisons_csv=smk.input.comparisons,
        curves_csv=smk.input.curves,
        anatomy=smk.params.anatomy,
        targets=smk.params.targets,
        archs=smk.params.archs,
        settings=smk.params.results,
        out_csv=smk.output.csv,
    )


workflow.run(main, snakemake)  # noqa: F821
