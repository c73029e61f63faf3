# raw data -> resources/index/{dataset}.parquet -> resources/cache/{dataset}/w{W}.npy
#
# Exactly one rule makes each dataset's raw data, by kind (wildcard constraints from the config):
# generate_synthetic writes resources/raw/{dataset}/ (PNGs + index.csv); fetch_nih downloads ChestX-ray14
# into resources/raw/{dataset}/ or verifies a local copy (params.path) and writes
# resources/raw/{dataset}/fetched.json. CheXpert, MURA and folder datasets are read in place by the index
# rule (no copy).


rule generate_synthetic:
    output:
        raw=directory(RAW),
    log:
        "logs/generate_synthetic/{dataset}.log",
    benchmark:
        "logs/benchmarks/generate_synthetic/{dataset}.tsv"
    wildcard_constraints:
        dataset=SYNTHETIC_DATASETS,
    conda:
        "../envs/data.yaml"
    threads: lambda wc: config["datasets"][wc.dataset]["workers"]
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        dataset=dataset_spec,
        seed=lambda wc: cfg_seed("dataset", wc.dataset),
    script:
        "../workflow_scripts/generate_synthetic.py"


rule fetch_nih:
    output:
        fetched=FETCHED,
    log:
        "logs/fetch_nih/{dataset}.log",
    benchmark:
        "logs/benchmarks/fetch_nih/{dataset}.tsv"
    wildcard_constraints:
        dataset=FETCHED_DATASETS,
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=1440,
    params:
        dataset=dataset_spec,
    script:
        "../workflow_scripts/fetch_nih.py"


rule index:
    input:
        unpack(index_inputs),
    output:
        index=INDEX,
    log:
        "logs/index/{dataset}.log",
    benchmark:
        "logs/benchmarks/index/{dataset}.tsv"
    wildcard_constraints:
        dataset=ALL_DATASETS,
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        dataset=dataset_spec,
    script:
        "../workflow_scripts/index.py"


rule cache:
    input:
        index=rules.index.output.index,
    output:
        cache=CACHE,
        meta=CACHE_META,
    log:
        "logs/cache/{dataset}_w{width}.log",
    benchmark:
        "logs/benchmarks/cache/{dataset}_w{width}.tsv"
    conda:
        "../envs/data.yaml"
    threads: lambda wc: config["datasets"][wc.dataset]["workers"]
    resources:
        mem_mb=cache_mem_mb,
        runtime=cache_runtime,
        # gates on what an image may measure, not pixel changes: resources, so a changed gate rebuilds
        # nothing (it applies when the cache is next built)
        min_side=config["preprocess"]["min_side"],
        max_pixels=lambda wc: config["datasets"][wc.dataset]["max_pixels"],
    params:
        aspect=config["preprocess"]["aspect"],
    script:
        "../workflow_scripts/cache.py"
