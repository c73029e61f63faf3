"""rule table1: images, patients and positives per task, label and split (results/table1.csv)."""

import _bootstrap  # noqa: F401

from smalldl import results, workflow


def main(smk):
    manifests = {name: path for name, path in smk.input.items()}
    print(results.table1_job(manifests, smk.config, smk.output.csv).to_string(index=False))


workflow.run(main, snakemake)  # noqa: F821
