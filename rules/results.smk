# Results: aggregation, Table 1 and statistics (config["results"]; no plot settings), the paper's
# findings tested on them and the source models' table, then the figures (the only rules that read
# config["plots"]), then results/README.md (the answer first, also results/answer.html for the report).
# Which figures exist is decided from the config alone (FIGURES, rules/common.smk).
# Each rule's script calls smalldl.jobs.results.<rule>. Every path is written once: a rule refers to an
# upstream file as rules.<rule>.output.<name>, so rules come after the rules they read from.

RESULTS = config["results"]


SELECT_ON = (STUDY.get("stages") or {}).get("select_on", "val_auc_tta")


AXIS_SPECS = {
    f: {k: v for k, v in s.items() if k in ("kind", "axis", "archs", "stage", "recipes")}
    for f, s in FIGURES.items()
    if s["kind"] == "axis"
}


TABLE1_TASKS = {
    t: {
        "type": config["tasks"][t]["type"],
        "labels": config["tasks"][t]["labels"],
        "balance": config["tasks"][t].get("balance", True),
    }
    for t in split_manifests()
}


rule aggregate:
    input:
        metrics=run_metrics,
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
    params:
        metric=RESULTS["metric"],
        select_on=SELECT_ON,
    script:
        "../workflow_scripts/aggregate.py"


rule table1:
    input:
        unpack(split_manifests),
    output:
        csv=report(
            "results/table1.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
    log:
        "logs/table1.log",
    benchmark:
        "logs/benchmarks/table1.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        targets=STUDY["targets"],
        tasks=TABLE1_TASKS,
        sizes=STUDY["sizes"],
    script:
        "../workflow_scripts/table1.py"


rule bootstrap:
    input:
        summary=rules.aggregate.output.parquet,
        predictions=run_predictions,
        val_predictions=cnn_val_predictions,
        splits=split_tables(),
    output:
        run_ci="results/run_ci.csv",
        seed_means="results/seed_means.csv",
        replicates="results/bootstrap.npz",
    log:
        "logs/bootstrap.log",
    benchmark:
        "logs/benchmarks/bootstrap.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        results=results_settings("metric", "ci", "bootstrap"),
        seed=config["seed"],
        select_on=SELECT_ON,
    script:
        "../workflow_scripts/bootstrap.py"


# a checkpoint: the final model's jobs (rules/final.smk) are planned from the recipe answer.csv recommends
checkpoint compare:
    input:
        summary=rules.aggregate.output.parquet,
        replicates=rules.bootstrap.output.replicates,
        predictions=run_predictions,
        stages=stage_files(),
    output:
        comparisons=report(
            "results/comparisons.csv",
            caption="../report/comparisons.rst",
            category="Tables",
        ),
        stages=report(
            "results/stages.csv",
            caption="../report/stages.rst",
            category="Tables",
        ),
        answer="results/answer.csv",
    log:
        "logs/compare.log",
    benchmark:
        "logs/benchmarks/compare.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        results=results_settings("metric", "ci", "comparison", "equivalence_margin"),
        select_on=SELECT_ON,
        figures=AXIS_SPECS,
    script:
        "../workflow_scripts/compare.py"


rule learning_curves:
    input:
        summary=rules.aggregate.output.parquet,
        replicates=rules.bootstrap.output.replicates,
    output:
        csv=report(
            "results/learning_curves.csv",
            caption="../report/learning_curves_table.rst",
            category="Tables",
        ),
    log:
        "logs/learning_curves.log",
    benchmark:
        "logs/benchmarks/learning_curves.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        results=results_settings("ci", "target_auc", "learning_curve"),
        seed=config["seed"],
    script:
        "../workflow_scripts/learning_curves.py"


rule findings:
    input:
        summary=rules.aggregate.output.parquet,
        replicates=rules.bootstrap.output.replicates,
        comparisons=rules.compare.output.comparisons,
        curves=rules.learning_curves.output.csv,
    output:
        csv=report(
            "results/findings.csv",
            caption="../report/findings.rst",
            category="Tables",
        ),
    log:
        "logs/findings.log",
    benchmark:
        "logs/benchmarks/findings.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        results=results_settings("ci", "equivalence_margin", "target_auc"),
        anatomy=cfg.source_anatomies(config),
        targets=STUDY["targets"],
        archs=STUDY["archs"],
    script:
        "../workflow_scripts/findings.py"


rule source_models:
    input:
        metas=source_metas(),
    output:
        csv=report(
            "results/source_models.csv",
            caption="../report/source_models.rst",
            category="Tables",
        ),
    log:
        "logs/source_models.log",
    benchmark:
        "logs/benchmarks/source_models.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        results=results_settings("ci"),
    script:
        "../workflow_scripts/source_models.py"


rule plot_auc_vs_n:
    input:
        seed_means=rules.bootstrap.output.seed_means,
    output:
        figures=report(
            figure_paths("auc_vs_n"),
            caption="../report/auc_vs_n.rst",
            category="Figures",
            subcategory="auc_vs_n",
        ),
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
        title=FIGURES["auc_vs_n"]["title"],
        caption=FIGURES["auc_vs_n"]["caption"],  # for the report (report/auc_vs_n.rst)
    script:
        "../workflow_scripts/plot_auc_vs_n.py"


rule plot_history:
    input:
        summary=rules.aggregate.output.parquet,
        metrics=run_metrics,
    output:
        figures=figure_outputs("../report/history.rst"),
    log:
        "logs/plot_history/{figure}.log",
    benchmark:
        "logs/benchmarks/plot_history/{figure}.tsv"
    wildcard_constraints:
        figure=regex_of(figures_of("history")),
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=config["plots"],
        spec=figure_spec("id", "title", "select", "caption"),  # caption: for the report
        targets=STUDY["targets"],
        archs=STUDY["archs"],
    script:
        "../workflow_scripts/plot_history.py"


rule plot_axis:
    input:
        summary=rules.aggregate.output.parquet,
        seed_means=rules.bootstrap.output.seed_means,
        stages=lambda wc: FIGURES[wc.figure].get("stage_files", []),
    output:
        figures=figure_outputs("../report/axis.rst"),
    log:
        "logs/plot_axis/{figure}.log",
    benchmark:
        "logs/benchmarks/plot_axis/{figure}.tsv"
    wildcard_constraints:
        figure=regex_of(figures_of("axis", "radiomics")),
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=config["plots"],
        spec=figure_spec("kind", "title", "axis", "archs", "stage", "recipes", "caption"),  # caption: report
    script:
        "../workflow_scripts/plot_axis.py"


rule plot_learning_curves:
    input:
        curves=rules.learning_curves.output.csv,
        seed_means=rules.bootstrap.output.seed_means,
    output:
        figures=report(
            figure_paths("learning_curves"),
            caption="../report/learning_curves.rst",
            category="Figures",
            subcategory="learning_curves",
        ),
    log:
        "logs/plot_learning_curves.log",
    benchmark:
        "logs/benchmarks/plot_learning_curves.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plots=config["plots"],
        target=RESULTS["target_auc"],
    script:
        "../workflow_scripts/plot_learning_curves.py"


rule results_readme:
    input:
        summary=rules.aggregate.output.parquet,
        seed_means=rules.bootstrap.output.seed_means,
        stages=rules.compare.output.stages,
        curves=rules.learning_curves.output.csv,
        table1=rules.table1.output.csv,
        comparisons=rules.compare.output.comparisons,
        findings=rules.findings.output.csv,
        sources=rules.source_models.output.csv,
        answer=rules.compare.output.answer,
    output:
        readme="results/README.md",
        answer=report(
            "results/answer.html",
            caption="../report/answer.rst",
            category="Answer",
        ),
    log:
        "logs/results_readme.log",
    benchmark:
        "logs/benchmarks/results_readme.tsv"
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        results=results_settings("metric", "ci", "target_auc", "equivalence_margin"),
        figures={f: {"title": s["title"], "config": s["config"]} for f, s in FIGURES.items()},
    script:
        "../workflow_scripts/results_readme.py"
