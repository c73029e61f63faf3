# Wildcards, paths and input functions shared by the rules. Everything here is cheap to evaluate:
# the DAG is built without importing torch.
#
# Each file path is written once: as a rule's output, referenced downstream as rules.X.output.Y, or,
# where an input function fills in wildcards of another rule, as one of the named templates below (the
# producing rule's output uses the same template).


import json
import os
import re
import sys

from snakemake.exceptions import IncompleteCheckpointException
from snakemake.io import checkpoint_target

from smalldl import figures as figplan
from smalldl.data import kinds as kinds_mod
from smalldl.data import manifest as manifest_mod
from smalldl.data import pool as pool_mod
from smalldl.utils import derive_seed
from snakemake_executor_plugin_slurm_groups import mend_group_jobs

# Snakemake 9.27.1 regroups merged group jobs when it plans again; the mend, its upstream issue and its
# version guard live in the plugin package and act only where jobs are grouped (--groups/--group-components)
mend_group_jobs()

WIDTH = config["preprocess"]["width"]
STUDY = config["study"]

# ------------------------------------------------------------------------------- path templates
# Snakemake's documented layout: what is retrieved or derived from the data (the images, their index and
# cache) under resources/, what the study makes under results/, logs and benchmarks under logs/
# (smalldl/layout.py names the same folders for the code that reads a study outside a rule's inputs).
RAW = "resources/raw/{dataset}"
FETCHED = "resources/raw/{dataset}/fetched.json"
INDEX = "resources/index/{dataset}.parquet"
CACHE = "resources/cache/{dataset}/w{width}.npy"
CACHE_META = "resources/cache/{dataset}/w{width}.json"
SPLIT = "results/splits/{task}/split.parquet"
MANIFEST = "results/splits/{task}/manifest.json"
SUBSET = "results/splits/{task}/train_n{n}_s{seed}.csv"
SOURCE_MODEL = "results/models/source/{source}/{arch}.pt"
GATE = "results/splits/study_gate.json"
LR_FIND = "results/runs/{task}/{arch}/{recipe}/lr_find.json"
RUN_DIR = "results/runs/{task}/{arch}/{recipe}/n{n}/s{seed}"
RUN = f"{RUN_DIR}/metrics.json"
FINAL_RUN_DIR = "results/final/{task}/runs/{arch}/{recipe}/n{n}/s{seed}"
STAGE = figplan.STAGE_PATH  # results/stages/{task}/{arch}/stage{k}.json
RADIOMICS_FEATURES = "results/radiomics/{dataset}-{featureset}.parquet"
RADIOMICS_RUN = "results/runs/{task}/radiomics_{featureset}/{model}/n{n}/s{seed}"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    task=r"[A-Za-z0-9_]+",
    source=r"[A-Za-z0-9_]+",
    arch=r"[A-Za-z0-9_.]+",
    recipe=r"[a-z]+-[a-z]+-[A-Za-z0-9_]+-[a-z]+(?:-e[0-9]+)?",
    n=r"\d+",
    seed=r"\d+",
    k=r"\d+",
    fmt=r"png|pdf|svg",


def cfg_seed(*keys):
    """A seed for one draw, derived from the global seed and the draw's keys."""
    return derive_seed(config["seed"], *keys)


def dataset_of(task):
    return config["tasks"][task]["dataset"]


def task_spec(wildcards):
    """params: the task of the job's {task} wildcard."""
    return config["tasks"][wildcards.task]


def cache_files(dataset):
    return {
        "cache": CACHE.format(dataset=dataset, width=WIDTH),
        "cache_meta": CACHE_META.format(dataset=dataset, width=WIDTH),
    }


def subset_paths(task):
    """Training subsets of a task for the study's sizes and seeds, and the lr finder's (targets only)."""
    if task not in STUDY["targets"]:
        return []
    paths = expand(SUBSET, task=task, n=STUDY["sizes"], seed=STUDY["seeds"])
    if config["train"]["lr_finder"]["enabled"]:
        tuning = SUBSET.format(task=task, n=cfg.tuning_size(config), seed=STUDY["seeds"][0])
        paths += [] if tuning in paths else [tuning]
    return paths


def regex_of(names):
    """A wildcard constraint matching exactly ``names`` (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


PRETRAINED_SOURCES = regex_of([s for s, v in config.get("sources", {}).items() if "task" in v])
IMAGENET_SOURCES = regex_of([s for s, v in config.get("sources", {}).items() if "weights" in v])


def kind_of(dataset):
    """The kind of a dataset (smalldl/data/kinds.py: the registry)."""
    return kinds_mod.KINDS[config["datasets"][dataset]["kind"]]


def datasets_made_by(raw):
    """The datasets whose kinds make their raw data by ``raw`` (kinds_mod.RAW_MODES)."""
    return sorted(n for n in config["datasets"] if kind_of(n).raw == raw)


# Raw data of each dataset comes from exactly one rule, by its kind's raw mode (constraints below).
# generate_synthetic writes resources/raw/{dataset}/, fetch_nih resources/raw/{dataset}/fetched.json; local copies (in_place:
# chexpert, mura, folder) are indexed where they are
SYNTHETIC_DATASETS = regex_of(datasets_made_by("generate"))
FETCHED_DATASETS = regex_of(datasets_made_by("fetch"))
ALL_DATASETS = regex_of(sorted(config["datasets"]))


#: Keys of a dataset that say how its jobs run, never what they make: decode processes and the largest
#: image a cache worker decodes (its memory). Resources, not params: a change reruns nothing.
DATASET_SCHEDULING_KEYS = ("workers", "max_pixels")


def dataset_spec(wildcards):
    """params: the dataset of the job's {dataset} wildcard (less DATASET_SCHEDULING_KEYS)."""
    spec = config["datasets"][wildcards.dataset]
    return {k: v for k, v in spec.items() if k not in DATASET_SCHEDULING_KEYS}


# The images of a public dataset (ChestX-ray14, CheXpert, MURA: 10^5 files, read in place or downloaded)
# are not inputs of the index job: the stamp of smalldl.data.manifest stands for them, set by the main
# process at each DAG build
if workflow.is_main_process:
    for _name in sorted(n for n in config["datasets"] if kind_of(n).public):
        _line = manifest_mod.mark(INDEX.format(dataset=_name))
        if _line:
            print(_line, file=sys.stderr)


def index_inputs(wildcards):
    """Inputs of the index job: the synthetic folder or the NIH fetch record, and every file on disk the
    index is built from (a folder dataset's CSV and images, the metadata of a local copy: ``sources``; the
    images of a public dataset through their stamp: ``images``), so that an edited CSV, an added row or a
    replaced image reruns the index and what depends on it."""
    spec = config["datasets"][wildcards.dataset]
    inputs = {"sources": pool_mod.source_files(wildcards.dataset, spec)}
    if kind_of(wildcards.dataset).public:
        inputs["images"] = str(manifest_mod.stamp_path(INDEX.format(dataset=wildcards.dataset)))
    raw = kind_of(wildcards.dataset).raw
    if raw == "generate":
        inputs["raw"] = RAW.format(dataset=wildcards.dataset)
    if raw == "fetch":
        inputs["fetched"] = FETCHED.format(dataset=wildcards.dataset)
    return inputs


def cache_mem_mb(wildcards):
    """MB for a cache job: its decode workers, each holding one image of up to max_pixels pixels."""
    from smalldl.data.limits import job_mem_mb

    spec = config["datasets"][wildcards.dataset]
    return job_mem_mb(spec["workers"], spec["max_pixels"])


def cache_runtime(wildcards):
    """Minutes for a cache job, by kind (real datasets hold 10^5 full-size radiographs)."""
    return kind_of(wildcards.dataset).cache_runtime


def split_inputs(wildcards):
    """A task's index, plus the splits and subsets of every task whose patients it must avoid
    (``exclude_split_{i}``, ``exclude_subsets_{i}``: smalldl.jobs.splits.excluded_inputs reads them).
    """
    task = config["tasks"][wildcards.task]
    inputs = {"index": INDEX.format(dataset=task["dataset"])}
    for i, other in enumerate(task["exclude_patients_of"]):
        inputs[f"exclude_split_{i}"] = SPLIT.format(task=other)
        inputs[f"exclude_subsets_{i}"] = subset_paths(other)
    return inputs


def source_task(wildcards):
    """params: the task a source is pretrained on (name)."""
    return config["sources"][wildcards.source]["task"]


def source_job_resource(key):
    """One scheduling key of a source's settings (cfg.job_resources), a resource of the pretrain rule."""
    return lambda wc: cfg.job_resources(cfg.source_settings(config, wc.source))[key]


def pretrain_inputs(wildcards):
    """The source task's split and cache, the model its recipe starts from (sources.<name>.recipe), and
    the study gate."""
    task = source_task(wildcards)
    inputs = {"split": SPLIT.format(task=task), **cache_files(dataset_of(task))}
    start = cfg.source_recipe(config, wildcards.source).source
    if start != cfg.NO_SOURCE:
        inputs["start"] = SOURCE_MODEL.format(source=start, arch=wildcards.arch)
    return inputs | gate_inputs(SOURCE_MODEL, wildcards)


# The study gate (rules/splits.smk): every (target, source chain) pair of the study, the task -> dataset
# of every task the pairs name, and their datasets. Decided from the config alone, once.
GATE_PAIRS = cfg.gate_pairs(config)
GATE_TASKS = {
    t: dataset_of(t)
    for pair in GATE_PAIRS
    for t in [pair["target"], *(link["task"] for link in pair["links"])]
}
GATE_DATASETS = sorted(set(GATE_TASKS.values()))


def gate_inputs(output, wildcards):
    """{"gate": the study gate's record}, an input of every training job (``output``: the job's first output
    template): the job waits for the gate, but a gate that runs again (the study changed) reruns none of
    them (ancient: its date is not compared). A job that finished before the gate existed (a study begun
    before there was one) does not take it as an input: Snakemake would rerun it for the new file alone.
    The gate is a target of rule all, so such a study is checked too."""
    if os.path.exists(GATE) or not os.path.exists(output.format(**wildcards)):
        return {"gate": ancient(GATE)}
    return {}


def _training_inputs(wildcards, n, seed, output):
    recipe = cfg.Recipe.parse(wildcards.recipe, config.get("sources", {}))
    inputs = {
        "split": SPLIT.format(task=wildcards.task),
        "subset": SUBSET.format(task=wildcards.task, n=n, seed=seed),
        **cache_files(dataset_of(wildcards.task)),
    }
    if recipe.source != cfg.NO_SOURCE:
        inputs["source"] = SOURCE_MODEL.format(source=recipe.source, arch=wildcards.arch)
    return inputs | gate_inputs(output, wildcards)


def lr_find_inputs(wildcards):
    """The lr finder runs once per (task, arch, recipe), at the tuning size and the first seed."""
    return _training_inputs(wildcards, cfg.tuning_size(config), STUDY["seeds"][0], LR_FIND)


def finetune_inputs(wildcards):
    inputs = _training_inputs(wildcards, wildcards.n, wildcards.seed, RUN)
    if config["train"]["lr_finder"]["enabled"]:
        # one sweep per recipe whatever its epochs (a stage's epochs: recipe name ending in -e<N>)
        recipe = cfg.Recipe.parse(wildcards.recipe).axes_name
        inputs["lr"] = LR_FIND.format(task=wildcards.task, arch=wildcards.arch, recipe=recipe)
    return inputs


def run_settings(wildcards):
    """The finetune job's training settings: train, with the recipe's epochs where it names them, less the
    scheduling keys (cfg.result_settings: they are resources, and changing one retrains nothing)."""
    return cfg.result_settings(cfg.recipe_settings(config, wildcards.recipe))


# ---------------------------------------------------------------------------------- the stages


def stage_winner(task, arch, k):
    """The winner of stage k (0-based) for (task, arch); raises until its checkpoint has run. A decision
    being made again (an earlier stage's runs changed) is incomplete too: Snakemake still lists the file it
    found at start-up as created, but has removed it to rerun the checkpoint."""
    path = checkpoints.select_stage.get(task=task, arch=arch, k=k).output.json
    if not os.path.exists(path):
        raise IncompleteCheckpointException(checkpoints.select_stage.rule, checkpoint_target(path))
    with open(path) as fh:
        return json.load(fh)["winner"]


def recipe_runs(task, arch, recipes):
    """metrics.json of every run of ``recipes`` for (task, arch) over the study's sizes and seeds."""
    return [
        RUN.format(task=task, arch=arch, recipe=r, n=n, seed=s)
        for r in recipes
        for n in STUDY["sizes"]
        for s in STUDY["seeds"]
    ]


def stage_runs(task, arch, k, previous):
    """Runs of every candidate of stage k: ``previous`` (the winner of stage k-1, None for the start
    recipe) varied along stage k's axis."""
    return recipe_runs(task, arch, cfg.stage_candidates(config, k, previous, task))


def stage_previous(wildcards):
    k = int(wildcards.k)
    return stage_winner(wildcards.task, wildcards.arch, k - 1) if k > 0 else None


def stage_metrics(wildcards):
    """Input function of select_stage: the runs of stage k's candidates."""
    return stage_runs(wildcards.task, wildcards.arch, int(wildcards.k), stage_previous(wildcards))


def stage_files():
    """Every stage's decision file (a plain list, known from the config alone)."""
    stages = STUDY.get("stages")
    if not stages:
        return []
    return expand(STAGE, task=STUDY["targets"], arch=STUDY["archs"], k=range(len(stages["vary"])))


def stage_run_metrics(decided_only=False):
    """Runs of every stage, resolved through the stage checkpoints in order. An input function
    (raises until each checkpoint has run); with decided_only, the runs of the stages decided so far
    (never raises: for rule all, whose stage files already make Snakemake run every checkpoint)."""
    stages = STUDY.get("stages")
    if not stages:
        return []
    paths = []
    for task in STUDY["targets"]:
        for arch in STUDY["archs"]:
            winner = None
            for k in range(len(stages["vary"])):
                paths += stage_runs(task, arch, k, winner)
                try:
                    winner = stage_winner(task, arch, k)
                except IncompleteCheckpointException:
                    if not decided_only:
                        raise
                    break
    return paths


def listed_run_metrics():
    """metrics.json of every run of the listed recipes (known from the config alone)."""
    return [RUN.format(**run) for run in cfg.runs(config)]


# ---------------------------------------------------------------------------------- radiomics


def radiomics_metrics():
    """metrics.json of every radiomics run (rules/radiomics.smk): each model and the best, per
    (task, featureset, n, seed) of the study; none while radiomics.featuresets is empty."""
    rad = config.get("radiomics", {})
    return expand(
        f"{RADIOMICS_RUN}/metrics.json",
        task=STUDY["targets"],
        featureset=rad.get("featuresets", []),
        model=[*rad.get("models", []), "best"],
        n=STUDY["sizes"],
        seed=STUDY["seeds"],
    )


def radiomics_feature_inputs(wildcards):
    """The dataset's cache and, for radiomics.images: used, the splits and training subsets of
    the study's targets on it (their val/test images and subsets get features)."""
    inputs = dict(cache_files(wildcards.dataset))
    if config["radiomics"]["images"] == "used":
        targets = [t for t in STUDY["targets"] if dataset_of(t) == wildcards.dataset]
        inputs["splits"] = [SPLIT.format(task=t) for t in targets]
        inputs["subsets"] = [p for t in targets for p in subset_paths(t)]
    return inputs


def radiomics_feature_settings(wildcards):
    """Only what changes a feature set's values (a changed setting reruns only that set)."""
    if wildcards.featureset == "pyradiomics":
        return {"bin_width": config["radiomics"]["bin_width"]}
    return {}


def radiomics_model_runs(name):
    """Input function: ``name`` (metrics.json, predictions.parquet) of each model of one
    (task, featureset, n, seed), in the order of radiomics.models."""
    return lambda wc: [
        f"{RADIOMICS_RUN}/{name}".format(model=m, **wc) for m in config["radiomics"]["models"]
    ]


# ---------------------------------------------------------------------------------- the results


def run_metrics(wildcards=None):
    """Every run's metrics.json: listed recipes, radiomics, then the stages' (checkpoint-aware input
    function)."""
    return list(dict.fromkeys(listed_run_metrics() + radiomics_metrics() + stage_run_metrics()))


# The results: which figures the config asks for is decided here, from the config alone
# (smalldl/figures.py, light).
FIGURES = figplan.plan(config)


def figure_paths(kind=None):
    """results/figures/{figure}.{fmt} of every planned figure (of one kind: auc_vs_n, history, axis,
    radiomics, learning_curves)."""
    return figplan.figure_files(FIGURES, config["plots"]["formats"], kind)


def run_predictions(wildcards=None):
    """predictions.parquet next to every run's metrics.json."""
    return [p[: -len("metrics.json")] + "predictions.parquet" for p in run_metrics(wildcards)]


def cnn_val_predictions(wildcards=None):
    """val_predictions.parquet of every CNN run (the answer's selection on validation)."""
    cnn = list(dict.fromkeys(listed_run_metrics() + stage_run_metrics()))
    return [p[: -len("metrics.json")] + "val_predictions.parquet" for p in cnn]


def split_tables(wildcards=None):
    """split.parquet of every target (patient ids: the bootstrap resamples patients)."""
    return [SPLIT.format(task=t) for t in STUDY["targets"]]


def source_metas():
    """The metadata JSON of every source model the study uses (pretrained or published weights), per
    architecture: chain, recipe, validation AUC (rule source_models)."""
    return [
        SOURCE_MODEL.replace(".pt", ".json").format(source=s, arch=a)
        for s in cfg.used_sources(config)
        for a in STUDY["archs"]
    ]


def split_manifests(wildcards=None):
    return {t: MANIFEST.format(task=t) for t in cfg.used_tasks(config)}


def figure_outputs(caption):
    """The outputs of a plotting rule with a {figure} wildcard, marked for the report."""
    return report(
        [figplan.FIGURE_PATH.replace("{fmt}", fmt) for fmt in config["plots"]["formats"]],
        caption=caption,
        category="Figures",
        subcategory="{figure}",
    )


def results_settings(*keys):
    """The results: settings a statistics rule uses (a change reruns only the rules that use it)."""
    return {k: config["results"][k] for k in keys}


def figure_spec(*keys):
    """params: the keys of a figure's spec (FIGURES[{figure}]) that its plotting job draws from."""
    return lambda wc: {k: v for k, v in FIGURES[wc.figure].items() if k in keys}


def figures_of(*kinds):
    return [f for f, spec in FIGURES.items() if spec["kind"] in kinds]


def all_results(wildcards=None):
    """Every listed run is a target itself: Snakemake does not regenerate a missing intermediate file
    whose consumers are up to date, and deleting one run's output must rerun that run. The stages'
    decision files are targets too (each resolves only its own stage's checkpoints, so the stages of
    different tasks and archs proceed in parallel), and so are the runs of every stage decided so far
    (a deleted stage run is rerun; its stage is re-decided)."""
    return [
        *listed_run_metrics(),
        *radiomics_metrics(),
        *stage_files(),
        *stage_run_metrics(decided_only=True),
        *rules.aggregate.output,
        rules.table1.output.csv,
        rules.bootstrap.output.run_ci,
        rules.bootstrap.output.seed_means,
        *rules.compare.output,
        rules.learning_curves.output.csv,
        rules.findings.output.csv,
        rules.source_models.output.csv,
        rules.results_readme.output.readme,
        *figure_paths(),
        *final_files(),
        GATE,
    ]


def final_files():
    """The final model of every target (rules/final.smk): its folder, card and figures."""
    return expand(
        [
            "results/final/{task}/model",
            "results/final/{task}/model_card.md",
            "results/final/{task}/model_card.html",
            "results/figures/cam_{task}.png",
            "results/figures/reliability_{task}.png",
        ],
        task=STUDY["targets"],
    )


# ------------------------------------------------------------------------------- the final model (rules/final.smk)


def final_choice(task):
    """(arch, recipe) that results/answer.csv recommends for ``task`` (smalldl.jobs.final.recommended):
    raises until compare has run."""
    from smalldl.errors import InputError
    from smalldl.jobs.final import recommended

    try:
        return recommended(checkpoints.compare.get().output.answer, task)
    except InputError as exc:
        raise WorkflowError(f"{exc}: no final model") from None


def final_run_files(task, name):
    """``name`` (metrics.json, model.pt) of the final runs of ``task``, one per seed (checkpoint-aware)."""
    arch, recipe = final_choice(task)
    n = max(STUDY["sizes"])
    return [
        f"{FINAL_RUN_DIR}/{name}".format(task=task, arch=arch, recipe=recipe, n=n, seed=s)
        for s in STUDY["seeds"]
    ]


def final_run_inputs(wildcards):
    """A finetune job's inputs, and the study's run of the same (task, arch, recipe, n, seed) to compare."""
    return finetune_inputs(wildcards) | {"study_run": RUN.format(**wildcards)}


def final_model_inputs(wildcards):
    task = wildcards.task
    return {
        "answer": checkpoints.compare.get().output.answer,
        "models": final_run_files(task, "model.pt"),
        "metrics": final_run_files(task, "metrics.json"),
        "seed_means": rules.bootstrap.output.seed_means,
        "split": SPLIT.format(task=task),
        "index": INDEX.format(dataset=dataset_of(task)),
        "cache_meta": CACHE_META.format(dataset=dataset_of(task), width=WIDTH),
    }
