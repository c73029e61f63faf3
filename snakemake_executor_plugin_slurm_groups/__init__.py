"""Snakemake's SLURM executor with group jobs whose members share the group's GPUs side by side.

snakemake-executor-plugin-slurm 2.8.0 starts a group job's inner Snakemake with ``--executor
slurm-jobstep --jobs 1``: the members run one after another, each as an ``srun`` step that would hold
the allocation's GPU (and, asking for no memory, all of its memory) while it runs. This executor is
that plugin (``--executor slurm-groups``; its settings are the slurm plugin's, prefixed
``--slurm-groups-``) but for groups whose members ask for a GPU and may share one: a member that asks
for ``gpu`` (or a ``gres`` with ``gpu``) and declares the resource ``jobs_per_gpu`` k > 1 runs k at a
time. For such a group this executor

- plans the submission the way Snakemake plans any group (``GroupResources.basic_layered``), with the
  group's turns (the resource ``group_turn``, one per member, scoped ``local``) raised to k: layers of
  up to k members side by side, ``--time`` the sum of the layers' longest runtimes (ceil(n / k) x a
  member's runtime), CPUs and memory those of the widest layer, and the GPUs of one member, not k
  members' (the members share them, k to a card: ``smalldl.devices`` puts them there);
- starts the group's inner Snakemake with ``--executor slurm-groups-jobstep --jobs W``, W the widest
  layer, whose ``srun`` steps overlap (``snakemake_executor_plugin_slurm_groups_jobstep``).

Other jobs and groups (CPU-only, or ``jobs_per_gpu`` 1) are submitted exactly as by the slurm plugin.
"""

from dataclasses import dataclass
from types import SimpleNamespace

from snakemake.resources import GroupResources
from snakemake_executor_plugin_slurm import Executor as SlurmExecutor
from snakemake_executor_plugin_slurm import ExecutorSettings as SlurmExecutorSettings
from snakemake_executor_plugin_slurm import common_settings  # noqa: F401  (required by the plugin interface)
from snakemake_interface_common.exceptions import WorkflowError

TURN = "group_turn"  # one per grouped member; the group's limit (1 in the profiles) is how many run at once
SHARE = "jobs_per_gpu"  # declared by a GPU member: how many members may share a GPU
JOBSTEP = "slurm-groups-jobstep"


@dataclass
class ExecutorSettings(SlurmExecutorSettings):
    """The slurm plugin's settings, as ``--slurm-groups-<setting>``."""


def asks_for_gpu(resources) -> bool:
    gres = resources.get("gres")
    return bool(resources.get("gpu")) or (isinstance(gres, str) and "gpu" in gres)


def side_by_side(group) -> int:
    """How many members of a group job may run at once: the smallest ``jobs_per_gpu`` of its members,
    when every member asks for a GPU; 1 otherwise."""
    members = list(group.jobs)
    if not members or not all(asks_for_gpu(job.resources) for job in members):
        return 1
    shares = [job.resources.get(SHARE) for job in members]
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in shares):
        return 1
    return min(shares)


def shared_plan(group, k: int) -> dict:
    """The group's resources with up to k members side by side: Snakemake's own layering under
    ``group_turn`` = k (each member taking one turn), then the GPUs of one member instead of a layer's
    sum. ``group_turn`` of the result is the widest layer."""
    constraints = group.global_resources.copy()
    constraints[TURN] = k
    levels = [
        [
            SimpleNamespace(resources={**dict(job.resources.items()), TURN: 1}, pipe_group=job.pipe_group)
            for job in level
        ]
        for level in group.toposorted
    ]
    plan = dict(
        GroupResources.basic_layered(
            toposorted_jobs=levels,
            constraints=constraints,
            run_local=False,
            additive_resources=["runtime"],
            sortby=["runtime"],
        )
    )
    gpus = [job.resources.get("gpu") for job in group.jobs]
    gpus = [g for g in gpus if isinstance(g, int) and not isinstance(g, bool)]
    if gpus:
        plan["gpu"] = max(gpus)
    return plan


def planned_width(job) -> int:
    """How many members of a group job its inner Snakemake runs at once: the widest layer of its shared
    plan (``shared_plan``); 1 for a single job or a group whose members do not share GPUs."""
    if not job.is_group() or (k := side_by_side(job)) <= 1:
        return 1
    return int(shared_plan(job, k).get(TURN, 1))


class Executor(SlurmExecutor):
    def run_job(self, job):
        if job.is_group() and (k := side_by_side(job)) > 1:
            plan = shared_plan(job, k)
            width = int(plan.get(TURN, 1))
            if width > 1:
                if not hasattr(job, "_resources"):
                    raise WorkflowError("slurm-groups: this Snakemake's GroupJob keeps no _resources to plan")
                job._resources = plan  # what the slurm plugin reads for sbatch: --time, --cpus, --mem, --gpus
                self.logger.info(
                    f"Group {job.groupid}: {len(job.jobs)} members, up to {width} at once sharing "
                    f"{plan.get('gpu', 0)} GPU(s) (jobs_per_gpu {k}); runtime {plan.get('runtime')} min"
                )
        super().run_job(job)

    def format_job_exec(self, job) -> str:
        """The slurm plugin's command for ``job``, its inner Snakemake's arguments those of the job's own
        width (``planned_width``): the slurm plugin's ``--executor slurm-jobstep --jobs 1`` (what
        ``additional_general_args``, which is not told the job, gives every job) stays for a width of 1
        and becomes ``group_args(width)`` otherwise. The width comes from the job this call formats, so
        it holds whichever thread or order the jobs are submitted in."""
        command = super().format_job_exec(job)
        width = planned_width(job)
        if width <= 1:
            return command
        slurm_args = self.additional_general_args()
        if command.count(slurm_args) != 1:
            raise WorkflowError(
                f"slurm-groups: the job command does not carry the slurm plugin's {slurm_args!r} once, so the "
                f"group's inner Snakemake cannot be given --jobs {width}: {command}"
            )
        return command.replace(slurm_args, group_args(width, self.workflow.executor_settings.pass_command_as_script))


#: The Snakemake release ``mend_group_jobs`` was written for and checked against.
MENDED_SNAKEMAKE = "9.27.1"
#: The upstream report closest to the bug it mends: group-components applied again when Snakemake plans
#: the DAG anew (after a checkpoint) regroups groups already merged (the non-idempotent
#: ``DAG._update_group_components``).
UPSTREAM_ISSUE = "https://github.com/snakemake/snakemake/issues/1628"


def check_snakemake(version: str | None = None) -> None:
    """Fail loudly on a Snakemake other than the one ``mend_group_jobs`` was written for."""
    import snakemake

    version = version if version is not None else snakemake.__version__
    if version != MENDED_SNAKEMAKE:
        raise WorkflowError(
            f"smalldl mends GroupJobFactory.new of Snakemake {MENDED_SNAKEMAKE}, not {version}: check whether "
            f"{UPSTREAM_ISSUE} is fixed there (a group merged again when the DAG is planned anew), then drop "
            f"the mend or raise MENDED_SNAKEMAKE (snakemake_executor_plugin_slurm_groups)"
        )


def mend_group_jobs(version: str | None = None) -> bool:
    """Make ``snakemake.jobs.GroupJobFactory.new`` build a group from the jobs it is asked for.

    Snakemake 9.27.1 caches a group job under the jobs it was made of, then merges other groups into it in
    place (group-components). When it plans the DAG again (after a checkpoint: the study's stages, and
    its DAG is post-processed twice before the first job), the cache hands back the merged group for one
    of its jobs and merges it once more: a fine-tuning group of 6 under group-components 5, and group
    jobs that overlap, a job in two submissions. A cached group whose jobs have changed since is made anew
    from the jobs asked for, as the first pass made it.

    Installed by rules/common.smk when the Snakefile is read (the group settings are not known yet then,
    and the DAG is built before any executor starts), it acts only where jobs are grouped: Snakemake makes
    group jobs only for ``--groups`` / ``--group-components`` (the SLURM profiles; no rule declares a
    ``group:``), and only then is the version checked (``check_snakemake``): on another Snakemake the
    first group fails loudly, since the mend replaces a private method and must be checked again. Returns
    whether it installed now (False: already done, or a Snakemake without the cache). ``version``: the
    Snakemake version to check against (default: the running one; for tests)."""
    from snakemake import jobs as smk_jobs

    factory = smk_jobs.GroupJobFactory
    if getattr(factory, "smalldl_fresh_groups", False) or not hasattr(factory(), "cache"):
        return False
    cached_new = factory.new

    def new(self, id, jobs, resources):
        check_snakemake(version)
        jobs = frozenset(jobs)
        group = cached_new(self, id, jobs, resources)
        if frozenset(group.jobs) != jobs:
            group = smk_jobs.GroupJob(id, jobs, resources)
            self.cache[(id, jobs)] = group
        return group

    factory.new = new
    factory.smalldl_fresh_groups = True
    return True


def group_args(width: int, pass_command_as_script: bool = False) -> str:
    """Arguments of the inner Snakemake of a group job whose members run ``width`` at a time."""
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    args = f"--executor {JOBSTEP} --jobs {width}"
    if pass_command_as_script:
        args += f" --{JOBSTEP}-pass-command-as-script"
    return args
