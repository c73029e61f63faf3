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


try:
    cfg.validate(config)
except InputError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/splits.smk"
include: "rules/pretrain.smk"
include: "rules/train.smk"
include: "rules/radiomics.smk"
include: "rules/results.smk"


rule all:
    default_target: True
    input:
        all_results,
