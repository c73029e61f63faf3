"""rule plot_learning_curves: fitted AUC(n) curves with the target AUC."""

import _bootstrap  # noqa: F401

from smalldl import plots, workflow


def main(smk):
    plots.learning_curves_job(
        smk.input.curves, smk.input.seed_means, smk.params.target, smk.params.plots, list(smk.output.figures)
    )


workflow.run(main, snakemake)  # noqa: F821
