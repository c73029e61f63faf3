# Fine-tuning: one job per (task, arch, recipe, training size n, seed).


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        metrics="runs/{task}/{arch}/{recipe}/n{n}/s{seed}/metrics.json",
        predictions="runs/{task}/{arch}/{recipe}/n{n}/s{seed}/predictions.parquet",
        history="runs/{task}/{arch}/{recipe}/n{n}/s{seed}/history.csv",
    log:
        "logs/finetune/{task}/{arch}/{recipe}/n{n}_s{seed}.log",
    benchmark:
        "logs/benchmarks/finetune/{task}/{arch}/{recipe}/n{n}_s{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
        gpu=config["train"]["gpu"],
    params:
        settings=config["train"],
        task=lambda wc: config["tasks"][wc.task],
    script:
        "../workflow_scripts/finetune.py"
