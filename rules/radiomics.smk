# Radiomics baselines: features once per image of a dataset -> one tuned classical model per
# (task, featureset, model, n, seed) on the CNNs' training subsets -> the best model per
# (task, featureset, n, seed) on validation AUC. No job exists while radiomics.featuresets is empty.

RADIOMICS = config["radiomics"]
RADIOMICS_FEATURESETS = regex_of(cfg.RADIOMICS_FEATURESETS)
# never "best", never a recipe (recipes have dashes)
RADIOMICS_MODELS = regex_of(cfg.RADIOMICS_MODELS)


rule radiomics_features:
    input:
        unpack(radiomics_feature_inputs),
    output:
        features=RADIOMICS_FEATURES,
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
        unpack(lambda wc: gate_inputs(f"{RADIOMICS_RUN}/metrics.json", wc)),
        features=lambda wc: RADIOMICS_FEATURES.format(
            dataset=dataset_of(wc.task), featureset=wc.featureset
        ),
        split=rules.split.output.split,
        subset=rules.subset.output.subset,
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
        task=task_spec,
        seed=config["seed"],
    script:
        "../workflow_scripts/radiomics_model.py"


rule radiomics_best:
    input:
        metrics=radiomics_model_runs("metrics.json"),
        predictions=radiomics_model_runs("predictions.parquet"),
    output:
        metrics=f"{RADIOMICS_RUN}/metrics.json".replace("{model}", "best"),
        predictions=f"{RADIOMICS_RUN}/predictions.parquet".replace("{model}", "best"),
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
