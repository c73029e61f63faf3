"""rule plot_axis: Figures 3-8 (radiomics, training methods, transfer methods, sources, initialisations)."""

import _bootstrap  # noqa: F401

from smalldl import plots, workflow


def main(smk):
    plots.axis_job(
        smk.input.summary,
        smk.input.seed_means,
        list(smk.input.stages),
        smk.params.spec,
        smk.params.plots,
        list(smk.output.figures),
    )


workflow.run(main, snakemake)  # noqa: F821
