"""Configuration: schema validation with defaults, semantic checks, recipes and the study grid.

Imported by the Snakefile at DAG-build time (``import smalldl.config as cfg``), so it must stay light: no
torch, no pandas. One module per concern, every public name re-exported here:

- ``recipes``: recipe names (``Recipe``), the axes' values, default recipes and sources, architectures;
- ``grid``: the study grid (runs, stage candidates), source recipes and chains, used tasks and sources,
  a job's settings (``SCHEDULING_KEYS``, ``result_settings``, ``job_resources``);
- ``datasets``: the identity of data (``data_root``, ``same_dataset``, ``same_data``) and a source's
  anatomy relative to a target (``source_anatomy``);
- ``leaks``: the config's own leak refusal and the study gate's pairs (``check_offered_leaks``,
  ``gate_pairs``, ``leak_links``);
- ``study``: what a study leaves out (targets, recipes, ``sizes: auto``), the sizes against the training
  pools, the start-up lines;
- ``validate``: the schema with defaults, the ``preset``, cross-reference checks, ``validate``, ``load``,
  ``train_settings``.
"""

from smalldl.config.datasets import (
    data_root,
    same_data,
    same_dataset,
    source_anatomies,
    source_anatomy,
)
from smalldl.config.grid import (
    SCHEDULING_KEYS,
    job_resources,
    possible_stage_recipes,
    pretrained_sources,
    recipe_settings,
    recipes,
    result_settings,
    runs,
    source_allowed,
    source_chain,
    source_recipe,
    source_settings,
    stage_candidates,
    stage_epochs,
    stage_reach,
    stage_values,
    tuning_size,
    used_sources,
    used_tasks,
)
from smalldl.config.leaks import (
    check_offered_leaks,
    gate_pairs,
    leak_links,
    offered_sources,
)
from smalldl.config.recipes import (
    ARCHS,
    AXES,
    BASE_RECIPES,
    DEFAULT_SOURCE_RECIPE,
    IMAGENET,
    IMAGENET_SOURCE,
    INITS,
    NO_SOURCE,
    RADIOMICS_FEATURESETS,
    RADIOMICS_MODELS,
    SCHEDULES,
    TORCHVISION_ARCHS,
    TRANSFERS,
    UNVERIFIED,
    Recipe,
)
from smalldl.config.study import (
    POOL_STEP,
    SIZE_LADDER,
    auto_sizes,
    default_recipes,
    default_targets,
    patient_id_warnings,
    resolve_study,
    study_summary,
    unused_warnings,
)
from smalldl.config.validate import (
    PRESETS,
    SCHEMA_PATH,
    load,
    load_schema,
    train_settings,
    validate,
)

__all__ = [
    "ARCHS",
    "AXES",
    "BASE_RECIPES",
    "DEFAULT_SOURCE_RECIPE",
    "IMAGENET",
    "IMAGENET_SOURCE",
    "INITS",
    "NO_SOURCE",
    "POOL_STEP",
    "PRESETS",
    "RADIOMICS_FEATURESETS",
    "RADIOMICS_MODELS",
    "Recipe",
    "SCHEDULES",
    "SCHEDULING_KEYS",
    "SCHEMA_PATH",
    "SIZE_LADDER",
    "TORCHVISION_ARCHS",
    "TRANSFERS",
    "UNVERIFIED",
    "auto_sizes",
    "check_offered_leaks",
    "data_root",
    "default_recipes",
    "default_targets",
    "gate_pairs",
    "job_resources",
    "leak_links",
    "load",
    "load_schema",
    "offered_sources",
    "patient_id_warnings",
    "possible_stage_recipes",
    "pretrained_sources",
    "recipe_settings",
    "recipes",
    "resolve_study",
    "result_settings",
    "runs",
    "same_data",
    "same_dataset",
    "source_allowed",
    "source_anatomies",
    "source_anatomy",
    "source_chain",
    "source_recipe",
    "source_settings",
    "stage_candidates",
    "stage_epochs",
    "stage_reach",
    "stage_values",
    "study_summary",
    "train_settings",
    "tuning_size",
    "unused_warnings",
    "used_sources",
    "used_tasks",
    "validate",
]
