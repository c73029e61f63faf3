# The final model of each target (smalldl/jobs/final.py): the recommended recipe (results/answer.csv, the
# compare checkpoint) at the largest size, each seed trained again keeping its best weights (final_run:
# deterministic, checked equal to the study's run), then results/final/{task}/ (final_model): the export
# that `smalldl predict` loads, its test predictions, the model card, the calibration and Grad-CAM figures.
# Only these runs keep weights; the study's runs never pay for it.


rule final_run:
    input:
        unpack(final_run_inputs),
    output:
        metrics=f"{FINAL_RUN_DIR}/metrics.json",
        model=f"{FINAL_RUN_DIR}/model.pt",
        predictions=f"{FINAL_RUN_DIR}/predictions.parquet",
        val_predictions=f"{FINAL_RUN_DIR}/val_predictions.parquet",
        history=f"{FINAL_RUN_DIR}/history.csv",
    log:
        "logs/final_run/{task}/{arch}/{recipe}/n{n}_s{seed}.log",
    benchmark:
        "logs/benchmarks/final_run/{task}/{arch}/{recipe}/n{n}_s{seed}.tsv"
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
        settings=run_settings,
        task=task_spec,
        seed=config["seed"],
    script:
        "../workflow_scripts/final_run.py"


rule final_model:
    input:
        unpack(final_model_inputs),
    output:
        model=directory("results/final/{task}/model"),
        metrics="results/final/{task}/metrics.json",
        predictions="results/final/{task}/test_predictions.csv",
        card="results/final/{task}/model_card.md",
        html=report(
            "results/final/{task}/model_card.html",
            caption="../report/model_card.rst",
            category="Final model",
            subcategory="{task}",
        ),
        cam=report(
            "results/figures/cam_{task}.png",
            caption="../report/cam.rst",
            category="Final model",
            subcategory="{task}",
        ),
        reliability=report(
            "results/figures/reliability_{task}.png",
            caption="../report/reliability.rst",
            category="Final model",
            subcategory="{task}",
        ),
    log:
        "logs/final_model/{task}.log",
    benchmark:
        "logs/benchmarks/final_model/{task}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        # gates on what a raw image may measure, recorded in the export for predict: resources, as for the
        # cache (changing a gate reruns nothing; the export is written with the gates of its run)
        max_pixels=lambda wc: config["datasets"][dataset_of(wc.task)]["max_pixels"],
        min_side=config["preprocess"]["min_side"],
    params:
        task=task_spec,
        seeds=STUDY["seeds"],
        n=max(STUDY["sizes"]),
        settings=cfg.result_settings(config["train"]),
        results=results_settings("ci", "bootstrap"),
        seed=config["seed"],
    script:
        "../workflow_scripts/final_model.py"
