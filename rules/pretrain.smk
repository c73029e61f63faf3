# Source models, one checkpoint per (source, arch) in one format: results/models/source/{source}/{arch}.pt.
# Sources with a task are pretrained here with their recipe (sources.<name>.recipe: e.g. from the
# ImageNet source's checkpoint with gradual unfreezing); sources with `weights: imagenet` take published
# weights.


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        model=SOURCE_MODEL,
        metrics=SOURCE_MODEL.replace(".pt", ".json"),
        history=SOURCE_MODEL.replace(".pt", ".history.csv"),
    log:
        "logs/pretrain/{source}_{arch}.log",
    benchmark:
        "logs/benchmarks/pretrain/{source}_{arch}.tsv"
    wildcard_constraints:
        source=PRETRAINED_SOURCES,
    # before the fine-tuning jobs whose inputs are ready: the sources' stage waits for it
    priority: 10
    conda:
        "../envs/torch.yaml"
    threads: lambda wc: cfg.source_settings(config, wc.source)["threads"]
    resources:
        mem_mb=lambda wc: cfg.source_settings(config, wc.source)["mem_mb"],
        runtime=lambda wc: cfg.source_settings(config, wc.source)["runtime"],
        gpu=lambda wc: cfg.source_settings(config, wc.source)["gpu"],
        # where and how the job runs (not params: a change reruns nothing; rules/train.smk)
        jobs_per_gpu=source_job_resource("jobs_per_gpu"),
        device=source_job_resource("device"),
        eval_batch_size=source_job_resource("eval_batch_size"),
        checkpoint=source_job_resource("checkpoint"),
    params:
        settings=lambda wc: cfg.result_settings(cfg.source_settings(config, wc.source)),
        recipe=lambda wc: cfg.source_recipe(config, wc.source).name,
        task_name=source_task,
        task=lambda wc: config["tasks"][source_task(wc)],
        seed=config["seed"],
    script:
        "../workflow_scripts/pretrain.py"


rule imagenet_weights:
    output:
        model=SOURCE_MODEL,
        metrics=SOURCE_MODEL.replace(".pt", ".json"),
    log:
        "logs/imagenet_weights/{source}_{arch}.log",
    benchmark:
        "logs/benchmarks/imagenet_weights/{source}_{arch}.tsv"
    wildcard_constraints:
        source=IMAGENET_SOURCES,
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        files=lambda wc: config["sources"][wc.source].get("files", {}),
        # torchvision's weights by name per arch (the paper's ResNet50: IMAGENET1K_V1), else DEFAULT
        versions=lambda wc: config["sources"][wc.source].get("torchvision_weights", {}),
    script:
        "../workflow_scripts/imagenet_weights.py"
