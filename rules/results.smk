# Aggregation (no plot settings) and figures (only they read config["plots"]).


rule aggregate:
    input:
        metrics=run_metrics(),
    output:
        parquet="results/summary.parquet",
        csv="results/summary.csv",
    log:
        "logs/aggregate.log",
    benchmark:
        "logs/benchmarks/aggregate.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/aggregate.py"


rule plot_auc_vs_n:
    input:
        summary="results/summary.parquet",
    output:
        figures=figure_paths(),
    log:
        "logs/plot_auc_vs_n.log",
    benchmark:
        "logs/benchmarks/plot_auc_vs_n.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=config["plots"],
    script:
        "../workflow_scripts/plot_auc_vs_n.py"
