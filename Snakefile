"""The study of Romero et al. (2021), "Training Deep Learning models with small datasets".

snakemake --cores all                        # the default offline demo (config.yaml)
snakemake --cores all --configfile my.yaml   # your study: my.yaml over the schema's defaults (not config.yaml)
"""

import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from smalldl import config as cfg
from smalldl.errors import InputError

# The demo's config.yaml is the study only when no --configfile is given: a study that names its own
# config file gets that file over the schema's defaults (the paper's protocol), never the demo's values.
if not workflow.overwrite_configfiles:

    configfile: str(Path(workflow.basedir) / "config.yaml")


# Validated and completed before any rule exists: what the study leaves out is derived (targets, recipes,
# sizes: auto from the targets' training pools, read from the data's metadata), every size and
# architecture is checked, and the main process says what the study runs and what it does not use.
# A job's process re-reads the config that the main process checked: no second check, nothing printed.
try:
    cfg.validate(
        config,
        check_pools=workflow.is_main_process,
        say=(lambda line: print(line, file=sys.stderr)) if workflow.is_main_process else None,
    )
except InputError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/splits.smk"
include: "rules/pretrain.smk"
include: "rules/train.smk"
include: "rules/radiomics.smk"
include: "rules/results.smk"
include: "rules/final.smk"


rule all:
    default_target: True
    input:
        all_results,


onsuccess:
    # a recipe whose test AUC lies below chance with confidence is said where the run ends, not only in the
    # results (smalldl.results.answer.below_chance_warnings; imported here, after the run, not at DAG build)
    from smalldl.results.answer import below_chance_warnings

    for line in below_chance_warnings(rules.bootstrap.output.seed_means):
        print(line, file=sys.stderr)
