"""rule plot_auc_vs_n: mean test AUC vs training size per recipe, with confidence bands."""

import _bootstrap  # noqa: F401

from smalldl import plots, workflow


def main(smk):
    plots.auc_vs_size_job(smk.input.seed_means, smk.params.spec, smk.params.plots, list(smk.output.figures))


workflow.run(main, snakemake)  # noqa: F821
