"""Where a study's files are, relative to the directory the workflow runs in: Snakemake's documented layout
(the snakemake-workflows template). What is retrieved or derived from the data goes under ``resources/``,
what the study makes under ``results/``, logs and benchmarks under ``logs/``; Snakemake keeps its own state
in ``.snakemake/``. Nothing else is written there.

The rules' path templates (rules/common.smk) spell these folders out; this module names them for the code
that finds a study's files outside a rule's inputs (the default place of a ChestX-ray14 download,
``python -m smalldl.data.manifest``, smalldl.costs, the benchmarks). No imports: anything may import it.
"""

RESOURCES = "resources"
RESULTS = "results"
LOGS = "logs"
#: The top-level entries a study writes in its working directory (Snakemake's own state included).
TOP_LEVEL = (RESOURCES, RESULTS, LOGS, ".snakemake")

#: raw/<dataset>/: a synthetic dataset's images, or ChestX-ray14 downloaded by fetch_nih
RAW = f"{RESOURCES}/raw"
#: index/<dataset>.parquet and its manifest of images (index/<dataset>.files.tsv)
INDEX = f"{RESOURCES}/index"
#: cache/<dataset>/w<W>.npy, the preprocessed images
CACHE = f"{RESOURCES}/cache"
#: splits/<task>/: split, manifest, training subsets; splits/study_gate.json
SPLITS = f"{RESULTS}/splits"
#: models/source/<source>/<arch>.pt, the source models
MODELS = f"{RESULTS}/models"
#: runs/<task>/<arch>/<recipe>/n<n>/s<seed>/, one training run (metrics.json, predictions, history)
RUNS = f"{RESULTS}/runs"
#: radiomics/<dataset>-<featureset>.parquet, the radiomics features
RADIOMICS = f"{RESULTS}/radiomics"
