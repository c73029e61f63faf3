# Source models: pretrain an architecture on a source task; fine-tuning jobs load its body.


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        model="models/source/{source}/{arch}.pt",
        metrics="models/source/{source}/{arch}.json",
        history="models/source/{source}/{arch}.history.csv",
    log:
        "logs/pretrain/{source}_{arch}.log",
    benchmark:
        "logs/benchmarks/pretrain/{source}_{arch}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: lambda wc: cfg.source_settings(config, wc.source)["threads"]
    resources:
        mem_mb=lambda wc: cfg.source_settings(config, wc.source)["mem_mb"],
        runtime=lambda wc: cfg.source_settings(config, wc.source)["runtime"],
        gpu=lambda wc: cfg.source_settings(config, wc.source)["gpu"],
    params:
        settings=lambda wc: cfg.source_settings(config, wc.source),
        task=lambda wc: config["tasks"][config["sources"][wc.source]["task"]],
    script:
        "../workflow_scripts/pretrain.py"
