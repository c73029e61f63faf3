"""rule leak_check: no patient a source model saw is in the target's validation or test set."""

import _bootstrap  # noqa: F401

from smalldl import workflow
from smalldl.jobs import splits


def main(smk):
    splits.leak_check(
        target_name=smk.wildcards.task,
        source=smk.wildcards.source,
        links=smk.params.links,
        target_split=smk.input.target,
        link_splits=list(smk.input.links),
        out_json=smk.output.json,
    )


workflow.run(main, snakemake)  # noqa: F821
