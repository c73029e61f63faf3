"""rule plot_auc_vs_n: test AUC vs training size per recipe."""

import _bootstrap  # noqa: F401
import pandas as pd

from smalldl import plots, workflow


def main(smk):
    plots.auc_vs_size(pd.read_parquet(smk.input.summary), smk.params.plots, list(smk.output.figures))


workflow.run(main, snakemake)  # noqa: F821
