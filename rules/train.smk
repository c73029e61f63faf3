# Fine-tuning: one job per (task, arch, recipe, training size n, seed); the lr finder once per
# (task, arch, recipe) at the tuning size; the stage-wise study's decisions (checkpoints).
#
# params hold what can change a result (cfg.result_settings); where and how a job runs (threads, memory,
# time, GPUs, device, eval_batch_size, checkpoint: cfg.SCHEDULING_KEYS) are threads and resources, which
# Snakemake does not compare: changing one reruns nothing.

TRAIN_JOB = cfg.job_resources(config["train"])


rule lr_find:
    input:
        unpack(lr_find_inputs),
    output:
        csv=LR_FIND.replace(".json", ".csv"),
        json=LR_FIND,
        png=LR_FIND.replace(".json", ".png"),
    log:
        "logs/lr_find/{task}/{arch}/{recipe}.log",
    benchmark:
        "logs/benchmarks/lr_find/{task}/{arch}/{recipe}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
        gpu=config["train"]["gpu"],
        jobs_per_gpu=TRAIN_JOB["jobs_per_gpu"],
        device=TRAIN_JOB["device"],
        eval_batch_size=TRAIN_JOB["eval_batch_size"],
        checkpoint=TRAIN_JOB["checkpoint"],
    params:
        settings=cfg.result_settings(config["train"]),
        task=task_spec,
        seed=config["seed"],
    script:
        "../workflow_scripts/lr_find.py"


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        metrics=RUN,
        predictions=f"{RUN_DIR}/predictions.parquet",
        val_predictions=f"{RUN_DIR}/val_predictions.parquet",
        history=f"{RUN_DIR}/history.csv",
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
        # members of a SLURM group job that share a GPU, k at a time (profiles/slurm: slurm-groups)
        jobs_per_gpu=TRAIN_JOB["jobs_per_gpu"],
        device=TRAIN_JOB["device"],
        eval_batch_size=TRAIN_JOB["eval_batch_size"],
        checkpoint=TRAIN_JOB["checkpoint"],
    params:
        settings=run_settings,
        task=task_spec,
        seed=config["seed"],
    script:
        "../workflow_scripts/finetune.py"


checkpoint select_stage:
    input:
        metrics=stage_metrics,
    output:
        json=STAGE,
    log:
        "logs/select_stage/{task}/{arch}/stage{k}.log",
    benchmark:
        "logs/benchmarks/select_stage/{task}/{arch}/stage{k}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        stages=STUDY.get("stages"),
        previous=stage_previous,
    script:
        "../workflow_scripts/select_stage.py"
