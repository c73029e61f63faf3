# Radiomics baselines: features once per image of a dataset -> one tuned classical model per
# (task, featureset, model, n, seed) on the CNNs' training subsets -> the best model per
# (task, featureset, n, seed) on validation AUC. No job exists while radiomics.featuresets is empty.

RADIOMICS = config["radiomics"]
RADIOMICS_FEATURESETS = r"paper79|pyradiomics"
RADIOMICS_MODELS = r"l1|l2|elasticnet|rf"  # never "best", never a recipe (recipes have dashes)


rule radiomics_features:
    input:
        unpack(radiomics_feature_inputs),
    output:
        features="radiomics/{dataset}-{featureset}.parquet",
    log:
        "logs/radiomics_features/{dataset}-{featureset}.log",
    benchmark:
        "logs/benchmarks/radiomics_features/{dataset}-{featureset}.tsv"
    wildcard_constraints:
        featureset=RADIOMICS_FEATURESETS,
    conda:
        "../envs/radiomics.yaml"
    threads: RADIOMICS["threads"]
    resources:
        mem_mb=RADIOMICS["mem_mb"],
        runtime=RADIOMICS["runtime"],
    params:
        images=RADIOMICS["images"],
        settings=radiomics_feature_settings,
    script:
        "../workflow_scripts/radiomics_features.py"


rule radiomics_model:
    input:
        features=lambda wc: f"radiomics/{dataset_of(wc.task)}-{wc.featureset}.parquet",
        split="splits/{task}/split.parquet",
        subset="splits/{task}/train_n{n}_s{seed}.csv",
    output:
        metrics=f"{RADIOMICS_RUN}/metrics.json",
        predictions=f"{RADIOMICS_RUN}/predictions.parquet",
    log:
        "logs/radiomics_model/{task}/{featureset}/{model}/n{n}_s{seed}.log",
    benchmark:
        "logs/benchmarks/radiomics_model/{task}/{featureset}/{model}/n{n}_s{seed}.tsv"
    wildcard_constraints:
        featureset=RADIOMICS_FEATURESETS,
        model=RADIOMICS_MODELS,
    conda:
        "../envs/radiomics.yaml"
    threads: RADIOMICS["model_threads"]
    resources:
        mem_mb=RADIOMICS["mem_mb"],
        runtime=RADIOMICS["runtime"],
    params:
        settings={k: RADIOMICS[k] for k in ("cv_folds", "n_iter", "rf_trees")},
        task=lambda wc: config["tasks"][wc.task],
        seed=config["seed"],
    script:
        "../workflow_scripts/radiomics_model.py"


rule radiomics_best:
    input:
        metrics=radiomics_model_runs("metrics.json"),
        predictions=radiomics_model_runs("predictions.parquet"),
    output:
        metrics="runs/{task}/radiomics_{featureset}/best/n{n}/s{seed}/metrics.json",
        predictions="runs/{task}/radiomics_{featureset}/best/n{n}/s{seed}/predictions.parquet",
    log:
        "logs/radiomics_best/{task}/{featureset}/n{n}_s{seed}.log",
    benchmark:
        "logs/benchmarks/radiomics_best/{task}/{featureset}/n{n}_s{seed}.tsv"
    wildcard_constraints:
        featureset=RADIOMICS_FEATURESETS,
    conda:
        "../envs/radiomics.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/radiomics_best.py"
