# index -> splits/{task}/split.parquet (patient-level train/val/test) -> nested training subsets


rule split:
    input:
        unpack(split_inputs),
    output:
        split=SPLIT,
        manifest=MANIFEST,
    log:
        "logs/split/{task}.log",
    benchmark:
        "logs/benchmarks/split/{task}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        task=task_spec,
        seed=config["seed"],
    script:
        "../workflow_scripts/split.py"


rule subset:
    input:
        split=rules.split.output.split,
    output:
        subset=SUBSET,
        info=SUBSET.replace(".csv", ".json"),
    log:
        "logs/subset/{task}_n{n}_s{seed}.log",
    benchmark:
        "logs/benchmarks/subset/{task}_n{n}_s{seed}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        task=task_spec,
        seed=config["seed"],
    script:
        "../workflow_scripts/subset.py"


rule leak_check:
    input:
        unpack(leak_check_inputs),
    output:
        json=LEAK_CHECK,
    log:
        "logs/leak_check/{task}_{source}.log",
    benchmark:
        "logs/benchmarks/leak_check/{task}_{source}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        links=leak_links,
    script:
        "../workflow_scripts/leak_check.py"
