"""The study of Romero et al. (2021), "Training Deep Learning models with small datasets".

snakemake --cores all                        # the default offline demo (config.yaml)
snakemake --cores all --configfile my.yaml   # your study: my.yaml over the schema's defaults (not config.yaml)
"""

import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from smalldl import config as cfg
from smalldl.errors import InputError


def _group_jobs_from_their_own_jobs():
    """Snakemake 9.27.1 caches a group job under the jobs it was made of, then merges other groups into
    it in place (group-components). When it plans the DAG again (after a checkpoint: the stages), the
    cache hands back the merged group for one of its jobs and merges it once more: a fine-tuning group of
    6 under group-components 5, and group jobs that overlap, a job in two submissions. A cached group whose
    jobs have changed since is made anew from the jobs asked for, as the first pass made it."""
    from snakemake import jobs as smk_jobs

    factory = smk_jobs.GroupJobFactory
    if getattr(factory, "smalldl_fresh_groups", False) or not hasattr(factory(), "cache"):
        return
    cached_new = factory.new

    def new(self, id, jobs, resources):
        jobs = frozenset(jobs)
        group = cached_new(self, id, jobs, resources)
        if frozenset(group.jobs) != jobs:
            group = smk_jobs.GroupJob(id, jobs, resources)
            self.cache[(id, jobs)] = group
        return group

    factory.new = new
    factory.smalldl_fresh_groups = True


_group_jobs_from_their_own_jobs()

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


rule all:
    default_target: True
    input:
        all_results,
