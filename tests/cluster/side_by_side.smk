# tests/cluster/test_slurm.py: fine-tuning runs that only sleep, under profiles/slurm-local (its grouping
# and its GPU for finetune), each saying when it ran and on which GPU. Four runs of one (task, arch,
# recipe) are one group job; jobs_per_gpu 2 lets two share the group's GPU at a time.
RUNS = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
SLEEP = 15  # seconds


rule all:
    input:
        [f"results/runs/t/arch/recipe/n{n}/s{seed}.txt" for n, seed in RUNS],


rule finetune:
    output:
        "results/runs/{task}/{arch}/{recipe}/n{n}/s{seed}.txt",
    threads: 1
    resources:
        mem_mb=200,
        runtime=3,
        jobs_per_gpu=2,
    shell:
        'echo "start $(date +%s.%N) gpus=${{CUDA_VISIBLE_DEVICES:-none}} job=$SLURM_JOB_ID" > {output}.part; '
        'sleep {SLEEP}; echo "end $(date +%s.%N)" >> {output}.part; mv {output}.part {output}'
