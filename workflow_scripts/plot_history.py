"""rule plot_history: Figure 1 (one-cycle lr and momentum) / Figure 2 (layer groups' lrs, unfreezing)."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import results


def main(smk):
    results.plot_history(
        summary_parquet=smk.input.summary,
        spec=smk.params.spec,
        targets=smk.params.targets,
        archs=smk.params.archs,
        options=smk.params.plots,
        out_figures=list(smk.output.figures),
    )


workflow.run(main, snakemake)  # noqa: F821
