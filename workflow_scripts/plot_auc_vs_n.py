"""rule plot_auc_vs_n: mean test AUC vs training size per recipe, with confidence bands."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.plot_auc_vs_n(
        seed_means_csv=smk.input.seed_means,
        title=smk.params.title,
        options=smk.params.plots,
        out_figures=list(smk.output.figures),
    )


workflow.run(main, snakemake)  # noqa: F821
