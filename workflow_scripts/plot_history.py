"""rule plot_history: Figure 1 (one-cycle lr and momentum) / Figure 2 (layer groups' lrs, unfreezing)."""

import _bootstrap  # noqa: F401

from smalldl import plots, workflow


def main(smk):
    run = plots.history_job(
        smk.input.summary,
        smk.params.spec,
        smk.params.targets,
        smk.params.archs,
        smk.params.plots,
        list(smk.output.figures),
    )
    print(f"{smk.wildcards.figure}: history of {run['path']}")


workflow.run(main, snakemake)  # noqa: F821
