"""rule split: patient-level train/val/test split of one task."""

import _bootstrap  # noqa: F401

from smalldl import jobs, workflow


def main(smk):
    config = smk.config
    task = config["tasks"][smk.wildcards.task]
    excluded = []
    for i, _other in enumerate(task["exclude_patients_of"]):
        subsets = [v for k, v in smk.input.items() if k.startswith(f"exclude_subset_{i}_")]
        excluded.append((smk.input[f"exclude_split_{i}"], subsets))
    jobs.make_split(config, smk.wildcards.task, smk.input.index, excluded, smk.output.split, smk.output.manifest)


workflow.run(main, snakemake)  # noqa: F821
