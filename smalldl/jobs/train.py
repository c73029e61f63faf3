"""rules/train.smk: the lr finder once per (task, arch, recipe) at the tuning size, one fine-tuning run
per (task, arch, recipe, n, seed), and the stage-wise study's decisions."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.config import Recipe
from smalldl.data import splits as splits_mod
from smalldl.jobs._shared import (
    build_recipe_model,
    choose_formats,
    environment,
    file_sha256,
    resumable_fit,
    target_data,
    training_job,
    write_history,
)
from smalldl.record import CnnFields, RunRecord, read_metrics_json
from smalldl.utils import (
    LOCK_NAME,
    atomic_path,
    derive_seed,
    process_start_time,
    save_torch,
    write_json,
    write_parquet,
)


def lr_find(
    *,
    task_name: str,
    task: Mapping[str, Any],
    arch: str,
    recipe_name: str,
    settings: Mapping[str, Any],
    global_seed: int,
    cache_npy: str | Path,
    cache_meta: str | Path,
    split_parquet: str | Path,
    subset_csv: str | Path,
    source_ckpt: str | Path | None,
    out_csv: str | Path,
    out_json: str | Path,
    out_png: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """The lr finder of one (task, arch, recipe) at the tuning size: sweep, chosen lr, plot."""
    from smalldl.train import lr_sweep

    recipe = Recipe.parse(recipe_name)
    lock = Path(out_json).with_name(f".{Path(out_json).stem}{LOCK_NAME}")
    with training_job(lock, f"lr_find {task_name} {arch} {recipe_name}", settings, threads) as (torch, device, slot):
        subset, train, _, _ = target_data(
            task=task, split_parquet=split_parquet, subset_csv=subset_csv, cache_npy=cache_npy, cache_meta=cache_meta
        )
        seed = derive_seed(global_seed, "lr_find", task_name, arch, recipe_name)
        model, _, _ = build_recipe_model(task=task, arch=arch, recipe=recipe, source_ckpt=source_ckpt, seed=seed)
        model = model.to(device)
        settings, formats = choose_formats(settings, device)
        print(f"lr finder {task_name} {arch} {recipe_name} on {len(train)} images", file=sys.stderr)
        sweep = lr_sweep(model, train, settings, task_type=task["type"], seed=seed, transfer=recipe.transfer)
        table = pd.DataFrame(sweep["rows"])
        with atomic_path(out_csv) as tmp:
            table.to_csv(tmp, index=False)
        info = {
            "task": task_name,
            "arch": arch,
            "recipe": recipe_name,
            "n": len(train),
            "subset": str(subset_csv),
            "rule": sweep["rule"],
            "lr": sweep["lr"],
            "raw_min_lr": sweep["raw_min_lr"],
            "smoothed_min_lr": sweep["smoothed_min_lr"],
            "seed": seed,
            "settings": dict(settings["lr_finder"]),
            **environment(device, formats, slot=slot),
        }
        _plot_sweep(table, sweep["lr"], f"{task_name} {arch} {recipe_name} (n={len(train)})", out_png)
        write_json(out_json, info)
        print(f"lr finder ({sweep['rule']}): max_lr = {sweep['lr']:.3g}", file=sys.stderr)
        return info


def _plot_sweep(table: pd.DataFrame, chosen: float, title: str, out_png: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(table["lr"], table["loss"], alpha=0.3, label="loss")
    ax.plot(table["lr"], table["smoothed_loss"], label="smoothed loss")
    ax.axvline(chosen, color="red", linestyle="--", label=f"chosen {chosen:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def finetune(
    *,
    task_name: str,
    task: Mapping[str, Any],
    arch: str,
    recipe_name: str,
    n: int,
    seed: int,
    settings: Mapping[str, Any],
    global_seed: int,
    cache_npy: str | Path,
    cache_meta: str | Path,
    split_parquet: str | Path,
    subset_csv: str | Path,
    source_ckpt: str | Path | None,
    lr_json: str | Path | None,
    out_metrics: str | Path,
    out_predictions: str | Path,
    out_val_predictions: str | Path,
    out_history: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """Train one (task, arch, recipe, n, seed) run and evaluate the selected model on the test set,
    with and without test-time augmentation (``out_predictions``; the validation set's predictions in
    ``out_val_predictions``, same columns). A killed run resumes from ``resume.pt`` in its folder.
    ``lr_json``: the lr finder's choice of max_lr (None: ``settings["max_lr"]``)."""
    t_entry = time.time()
    startup = t_entry - process_start_time()
    from smalldl.evaluate import evaluate_views

    out_val = out_val_predictions

    recipe = Recipe.parse(recipe_name)
    job = f"finetune {task_name} {arch} {recipe_name} n={n} seed={seed}"
    # one process at a time trains into the run folder (resume.pt, model.pt)
    with training_job(Path(out_metrics).parent / LOCK_NAME, job, settings, threads) as (torch, device, slot):
        subset, train, val, test = target_data(
            task=task,
            split_parquet=split_parquet,
            subset_csv=subset_csv,
            cache_npy=cache_npy,
            cache_meta=cache_meta,
            n=n,
        )
        labels = list(task["labels"])
        run_seed = derive_seed(global_seed, "run", task_name, arch, recipe_name, n, seed)
        max_lr, lr_source = float(settings["max_lr"]), "config"
        if lr_json is not None:
            max_lr, lr_source = float(json.loads(Path(lr_json).read_text())["lr"]), "finder"
        model, source_meta, init_info = build_recipe_model(
            task=task, arch=arch, recipe=recipe, source_ckpt=source_ckpt, seed=run_seed
        )
        model = model.to(device)
        print(
            f"finetune {task_name} {arch} {recipe_name} n={n} seed={seed}: train {len(train)}, val {len(val)}, "
            f"test {len(test)}, max_lr {max_lr:.3g} ({lr_source})",
            file=sys.stderr,
        )
        run_dir = Path(out_metrics).parent
        identity = {
            "recipe": recipe_name,
            "run_seed": run_seed,
            "max_lr": max_lr,
            "train": list(train.image_ids),
            "source": file_sha256(source_ckpt) if source_ckpt else None,
        }
        fitted = resumable_fit(
            model,
            train,
            val,
            settings,
            device=device,
            task=task,
            recipe=recipe,
            seed=run_seed,
            checkpoint=run_dir / "resume.pt",
            identity=identity,
            max_lr=max_lr,
        )
        result, settings, formats = fitted.result, fitted.settings, fitted.formats
        t0 = time.time()
        kind, views, tta_seed = task["type"], settings["tta"], derive_seed(run_seed, "tta")
        # one pass over the test set: the centre crop is the TTA's first view (the plain validation score is
        # fit's, of the selected epoch, so the validation set needs only its TTA pass)
        test_sc, test_tta = evaluate_views(
            model, test, settings, device=device, task_type=kind, labels=labels, tta=views, seed=tta_seed
        )
        # the validation predictions too: the answer's selection (non-inferiority on validation) resamples
        # the validation patients as the comparisons resample the test patients. Their centre crop is fit's
        # validation of the selected epoch (same weights and batches): only the TTA views are computed
        val_sc, val_tta = evaluate_views(
            model, val, settings, device=device, task_type=kind, labels=labels, tta=views, seed=tta_seed,
            plain=result["val_prob"],
        )  # fmt: skip
        t_write = time.time()
        write_history(result["history"], out_history)
        for data, plain, tta, out in ((test, test_sc, test_tta, out_predictions), (val, val_sc, val_tta, out_val)):
            write_parquet(predictions_table(data, labels, plain, tta), out)
        if settings["save_model"]:
            state = model.cpu().state_dict()
            save_torch({"arch": arch, "state": state, "sha256": result["selected_state_sha256"]}, run_dir / "model.pt")
        phase_s = {
            "startup": startup,
            "setup": fitted.started - t_entry,
            "train": result["wall_time_s"] - result["validate_s"],
            "validate": result["validate_s"],
            "test": t_write - t0,
            "write": time.time() - t_write,
        }
        env = environment(device, formats, slot=slot)
        record = RunRecord(
            family="cnn",
            task=task_name,
            arch=arch,
            recipe=recipe_name,
            schedule=recipe.schedule,
            transfer=recipe.transfer,
            source=recipe.source,
            init=recipe.init,
            n=n,
            seed=seed,
            run_seed=run_seed,
            task_type=task["type"],
            labels=labels,
            n_train=len(train),
            n_val=len(val),
            n_test=len(test),
            train_positives=splits_mod.positive_counts(subset, labels),
            val_auc=result["val_auc"],
            val_auc_tta=val_tta["auc"] if val_tta else None,
            val_loss=result["val_loss"],
            val_auc_per_label=result["val_per_label"],
            test_auc=test_sc["auc"],
            test_auc_tta=test_tta["auc"] if test_tta else None,
            test_loss=test_sc["loss"],
            test_auc_per_label=test_sc["per_label"],
            test_auc_per_label_tta=test_tta["per_label"] if test_tta else None,
            tta_views=views,
            selected_epoch=result["best_epoch"],
            epochs=settings["epochs"],
            max_lr=max_lr,
            steps=result["steps"],
            wall_time_s=result["wall_time_s"] + (time.time() - t0),
            images_per_s=result["images_per_s"],
            source_checkpoint=str(source_ckpt) if source_ckpt else None,
            source_val_auc=source_meta.get("val_auc"),
            cnn=CnnFields(
                selected_state_sha256=result["selected_state_sha256"],
                epochs_run=result["epochs_run"],
                lr_source=lr_source,
                init_info=init_info,
                phase_s={k: round(v, 3) for k, v in phase_s.items()},
            ),
            **env,
        )
        metrics = record.to_json()
        write_json(out_metrics, metrics)
        if fitted.checkpoint is not None:
            fitted.checkpoint.unlink(missing_ok=True)
        tta_text = f", with TTA {test_tta['auc']:.4f}" if test_tta else ""
        print(
            f"test AUC {test_sc['auc']:.4f}{tta_text} (val AUC {result['val_auc']:.4f}, epoch {result['best_epoch']})",
            file=sys.stderr,
        )
        return metrics


def predictions_table(
    data: Any, labels: Sequence[str], plain: Mapping[str, Any], tta: Mapping[str, Any] | None
) -> pd.DataFrame:
    """A run's predictions on one split: image_id, then per label y_<label>, p_<label> (centre crop) and
    p_tta_<label> (with test-time augmentation, when it ran)."""
    preds = pd.DataFrame({"image_id": data.image_ids})
    targets = data.targets.reshape(len(data), -1)
    for j, label in enumerate(labels):
        preds[f"y_{label}"] = targets[:, j].astype(np.int64)
        preds[f"p_{label}"] = plain["prob"][:, j]
        if tta is not None:
            preds[f"p_tta_{label}"] = tta["prob"][:, j]
    return preds


def select_stage(
    *,
    task_name: str,
    arch: str,
    stage: int,
    stages: Mapping[str, Any],
    previous: str | None,
    metrics_paths: Sequence[str | Path],
    out_json: str | Path,
) -> dict[str, Any]:
    """Pick the winner of one stage on validation AUC averaged over sizes and seeds (never test).
    ``stages``: study.stages (its select_on and each stage's axis)."""
    from smalldl.stages import select_winner

    rows = [read_metrics_json(p) for p in metrics_paths]
    candidates = list(dict.fromkeys(row["recipe"] for row in rows))
    result = select_winner(rows, candidates, stages["select_on"])
    out = {
        "task": task_name,
        "arch": arch,
        "stage": stage,
        "axis": stages["vary"][stage]["axis"],
        "previous": previous,
        **result,
    }
    write_json(out_json, out)
    print(f"stage {stage} ({out['axis']}): winner {out['winner']} {json.dumps(out['scores'])}", file=sys.stderr)
    return out
