"""rule plot_axis: Figures 3-8 (radiomics, training methods, transfer methods, sources, initialisations)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.plot_axis(
        summary_parquet=smk.input.summary,
        seed_means_csv=smk.input.seed_means,
        stage_files=list(smk.input.stages),
        spec=smk.params.spec,
        options=smk.params.plots,
        out_figures=list(smk.output.figures),
    )


workflow.run(main, snakemake)  # noqa: F821
