"""rule plot_learning_curves: fitted AUC(n) curves with the target AUC."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.plot_learning_curves(
        curves_csv=smk.input.curves,
        seed_means_csv=smk.input.seed_means,
        target=smk.params.target,
        options=smk.params.plots,
        out_figures=list(smk.output.figures),
    )


workflow.run(main, snakemake)  # noqa: F821
