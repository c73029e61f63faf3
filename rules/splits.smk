# index -> results/splits/{task}/split.parquet (patient-level train/val/test) -> nested training
# subsets; the study gate


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


# The study gate: every training job of the study (pretrain, lr_find, finetune, radiomics_model) waits for
# it, so a leak stops the study before any training, with --keep-going too. It reads split tables and
# indexes only (never a model): no cycle. Its output is an ancient() input of those jobs (gate_inputs):
# rerunning the gate (a new target or source) reruns no training.


rule study_gate:
    input:
        splits=[SPLIT.format(task=t) for t in GATE_TASKS],
        indexes=[INDEX.format(dataset=d) for d in GATE_DATASETS],
    output:
        json=GATE,
    log:
        "logs/study_gate.log",
    benchmark:
        "logs/benchmarks/study_gate.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        pairs=GATE_PAIRS,
        tasks=GATE_TASKS,
        datasets=GATE_DATASETS,
    script:
        "../workflow_scripts/study_gate.py"
