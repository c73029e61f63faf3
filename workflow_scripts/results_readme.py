"""rule results_readme: results/README.md (stage winners, headline numbers, files)."""

import _bootstrap  # noqa: F401

from smalldl import results, workflow


def main(smk):
    results.readme_job(dict(smk.input.items()), smk.params.figures, smk.params.results, smk.output.readme)


workflow.run(main, snakemake)  # noqa: F821
