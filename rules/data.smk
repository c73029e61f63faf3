# raw/{dataset}/ -> index/{dataset}.parquet -> cache/{dataset}/w{W}.npy


rule generate_synthetic:
    output:
        directory("raw/{dataset}"),
    log:
        "logs/generate_synthetic/{dataset}.log",
    benchmark:
        "logs/benchmarks/generate_synthetic/{dataset}.tsv"
    conda:
        "../envs/data.yaml"
    threads: lambda wc: config["datasets"][wc.dataset]["workers"]
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        dataset=lambda wc: config["datasets"][wc.dataset],
        seed=lambda wc: cfg_seed("dataset", wc.dataset),
    script:
        "../workflow_scripts/generate_synthetic.py"


rule index:
    input:
        raw="raw/{dataset}",
    output:
        "index/{dataset}.parquet",
    log:
        "logs/index/{dataset}.log",
    benchmark:
        "logs/benchmarks/index/{dataset}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../workflow_scripts/index.py"


rule cache:
    input:
        index="index/{dataset}.parquet",
    output:
        cache="cache/{dataset}/w{width}.npy",
        meta="cache/{dataset}/w{width}.json",
    log:
        "logs/cache/{dataset}_w{width}.log",
    benchmark:
        "logs/benchmarks/cache/{dataset}_w{width}.tsv"
    conda:
        "../envs/data.yaml"
    threads: lambda wc: config["datasets"][wc.dataset]["workers"]
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        aspect=config["preprocess"]["aspect"],
    script:
        "../workflow_scripts/cache.py"
