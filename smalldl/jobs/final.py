"""rules/final.smk: the final model of each target (``final_run``, ``final_model``).

``final_run`` trains one seed of the recommended recipe at the largest size again, with the study's
settings and seeds (training is deterministic), keeping its best weights (``model.pt``); it fails loudly
where its validation or test AUC is not the study run's to the bit. Only these runs keep weights: the
study's runs never pay for it.

``final_model`` assembles ``results/final/{task}/``: the ensemble of the seeds' models, or the single best
seed where the ensemble is not better on validation (mean AUC; the choice and its numbers are in the
card), a temperature fitted on validation where it lowers the validation NLL, the export
(``smalldl.final``) checked by loading it back, its validation and test predictions made from the raw
image files as ``smalldl predict`` makes them (``predictions.csv``: the test AUC a user can reproduce), the
calibration and operating points on test (``smalldl.calibration``), the Grad-CAM figure of a seeded sample
of test images (``smalldl.cam``), and the model card (``model_card.md``, ``model_card.html``).
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.errors import InputError
from smalldl.utils import atomic_path, derive_seed, read_table, write_json

#: Images per category (true positive, false positive, false negative) in the class-activation figure.
CAM_PER_KIND = 3
#: The keys of a run record that a final run must reproduce exactly.
REPRODUCED = ("val_auc", "val_auc_tta", "test_auc", "test_auc_tta", "selected_epoch")
#: A label with fewer test positives than this is named among the limitations.
FEW_POSITIVES = 20


def final_run(*, study_metrics: str | Path, run: Mapping[str, Any]) -> dict[str, Any]:
    """``smalldl.jobs.train.finetune(**run)`` (``run``: its keyword arguments, ``workflow.finetune_arguments``)
    with ``save_model`` on (its ``model.pt`` beside ``out_metrics``), then the check that it reproduced the
    study's run of the same (task, arch, recipe, n, seed) (``study_metrics``; the keys ``REPRODUCED``):
    InputError naming both files if not."""
    from smalldl.jobs.train import finetune
    from smalldl.record import read_metrics_json

    out_metrics = run["out_metrics"]
    metrics = finetune(**{**run, "settings": {**run["settings"], "save_model": True}})
    study = read_metrics_json(study_metrics)
    differ = {k: (study.get(k), metrics.get(k)) for k in REPRODUCED if not _same(study.get(k), metrics.get(k))}
    if differ:
        words = ", ".join(f"{k} {a} in the study, {b} now" for k, (a, b) in differ.items())
        raise InputError(
            f"the final run {out_metrics} does not reproduce the study's run {study_metrics}: "
            f"{words}. Training is meant to be deterministic (same settings, seeds, data and device type): "
            "was the study run on another device or torch version, or were its inputs changed since?"
        )
    print(f"final run reproduces {study_metrics}: " + ", ".join(f"{k} {metrics.get(k)}" for k in REPRODUCED))
    return metrics


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def recommended(answer_csv: str | Path, task: str) -> tuple[str, str]:
    """(arch, recipe) recommended for ``task`` in results/answer.csv (``recommended`` rows; several archs:
    the higher validation AUC)."""
    with open(answer_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "recommend" and r["task"] == task]
    chosen = [r for r in rows if r["recommended"] == "True"]
    if not chosen:
        raise InputError(f"{answer_csv} recommends no recipe for {task} (no CNN recipe ran at every size and seed)")
    best = max(chosen, key=lambda r: float(r["select_b"]) if r["select_b"] else -math.inf)
    return best["arch_b"], best["recipe_b"]


def recommendation_words(answer_csv: str | Path, task: str, arch: str, recipe: str) -> str:
    """Why answer.csv recommends ``recipe``: the validation winner, or a cheaper recipe non-inferior to it."""
    with open(answer_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "recommend" and r["task"] == task]
    row = next((r for r in rows if r["arch_b"] == arch and r["recipe_b"] == recipe), None)
    if row is None:
        return "the recipe answer.csv recommends"
    others = len({r["recipe_b"] for r in rows}) - 1
    if row["recipe_a"] == recipe:
        return (
            f"the highest mean validation AUC ({_f(row['select_b'])}) of the {others + 1} recipes run at every "
            "size and seed, and no cheaper recipe was shown not worse on validation"
        )
    return (
        f"the cheapest recipe not worse on validation than the winner `{row['recipe_a']}` (validation AUC "
        f"{_f(row['select_b'])} vs {_f(row['select_a'])}; difference {_f(row['val_diff'])}, interval "
        f"{_f(row['val_lo'])} to {_f(row['val_hi'])}, within the equivalence margin)"
    )


def _targets(table: pd.DataFrame, task: Mapping[str, Any], outputs: int) -> np.ndarray:
    """N x outputs binary targets (-1: uncertain): the labels, or one column per class (multiclass)."""
    labels = list(task["labels"])
    if task["type"] == "multiclass":
        return np.eye(outputs, dtype=np.float64)[table[labels[0]].to_numpy(dtype=int)]
    return table[labels].to_numpy(dtype=np.float64)


def _mean_auc(y: np.ndarray, p: np.ndarray) -> tuple[float, dict[str, float], np.ndarray]:
    """(mean AUC, {}, per-output AUCs) by the study's own functions (``smalldl.metrics``: labels with one
    class are NaN and left out of the mean), so a user's AUC from ``smalldl predict`` matches to the bit."""
    from smalldl.metrics import auc_per_label, mean_auc

    per = auc_per_label(y, p, [str(j) for j in range(y.shape[1])])
    return mean_auc(per), {}, np.array(list(per.values()), dtype=np.float64)


def final_model(
    *,
    task_name: str,
    task: Mapping[str, Any],
    seeds: Sequence[int],
    n: int,
    settings: Mapping[str, Any],
    results: Mapping[str, Any],
    global_seed: int,
    max_pixels: int,
    min_side: int,
    answer_csv: str | Path,
    run_models: Sequence[str | Path],
    run_metrics: Sequence[str | Path],
    seed_means_csv: str | Path,
    split_parquet: str | Path,
    index_parquet: str | Path,
    cache_meta: str | Path,
    out_model: str | Path,
    out_metrics: str | Path,
    out_predictions: str | Path,
    out_card: str | Path,
    out_html: str | Path,
    out_cam: str | Path,
    out_reliability: str | Path,
) -> dict[str, Any]:
    """Assemble, export, check and describe the final model of ``task_name`` (see the module)."""
    import json

    import torch

    from smalldl import calibration as cal
    from smalldl import final
    from smalldl.record import read_metrics_json

    arch, recipe = recommended(answer_csv, task_name)
    records = [read_metrics_json(p) for p in run_metrics]
    for rec, path in zip(records, run_metrics, strict=True):
        if rec.get("arch") != arch or rec.get("recipe") != recipe:
            raise InputError(f"{path} is a run of {rec.get('arch')} {rec.get('recipe')}, not of {arch} {recipe}")
    info = json.loads(Path(cache_meta).read_text())
    tta_seed = derive_seed(global_seed, "final", task_name, "tta")
    pre = final.preprocess_spec(
        width=info["width"],
        height=info["height"],
        crop=settings["crop"],
        arch=arch,
        max_pixels=max_pixels,
        min_side=min_side,
    )
    states = {
        int(s): torch.load(p, map_location="cpu", weights_only=True)["state"]
        for s, p in zip(seeds, run_models, strict=True)
    }
    outputs = next(iter(states.values()))["head.weight"].shape[0]
    base = dict(task_name=task_name, task=task, arch=arch, recipe=recipe, outputs=outputs, settings=settings,
                preprocess=pre, tta_seed=tta_seed)  # fmt: skip

    # the validation and test images, read from the raw files as `smalldl predict` reads them (sorted)
    index = read_table(index_parquet)
    split = read_table(split_parquet)
    parts = {}
    for name in ("val", "test"):
        rows = split[(split["split"] == name) & split["selected"]]
        keep = ["image_id", *(c for c in ("patient_id", "path", "view") if c in index.columns and c not in rows)]
        table = rows.merge(index[keep], on="image_id", how="left", validate="one_to_one")
        # the order `smalldl predict` scores files in (sorted paths): the same batches, the same numbers
        order = sorted(range(len(table)), key=lambda i: Path(table["path"].iloc[i]))
        parts[name] = table.iloc[order].reset_index(drop=True)
    images = {k: np.stack([final.read_image(p, {"preprocess": pre}) for p in t["path"]]) for k, t in parts.items()}
    y = {k: _targets(t, task, outputs) for k, t in parts.items()}

    # each seed's model on validation, then the ensemble: the ensemble unless a single seed is better there
    def model_of(members: Mapping[int, Any], temperature: float = 1.0) -> final.FinalModel:
        nets = []
        for state in members.values():
            from smalldl import models

            net = models.build(arch, outputs)
            net.load_state_dict(state)
            nets.append(net.eval())
        spec = final.model_spec(**base, temperature=temperature)
        return final.FinalModel(spec=spec, nets=nets, device=torch.device("cpu"))

    val_single = {s: model_of({s: st}).probabilities(images["val"]) for s, st in states.items()}
    single_auc = {s: _mean_auc(y["val"], p)[0] for s, p in val_single.items()}
    ens_val = (
        np.mean(np.stack(list(val_single.values())), axis=0) if len(states) > 1 else next(iter(val_single.values()))
    )
    ens_auc = _mean_auc(y["val"], ens_val)[0]
    choice = ensemble_choice(single_auc, ens_auc)
    choice.update(val_auc_ensemble=ens_auc, val_auc_seeds={str(s): a for s, a in single_auc.items()})
    members = {s: states[s] for s in choice["seeds"]}
    p_val = ens_val if choice["kind"] == "ensemble" else val_single[choice["seeds"][0]]
    y_fit = y["val"].argmax(axis=1) if task["type"] == "multiclass" else y["val"]
    temp = cal.choose_temperature(y_fit, p_val, task["type"])

    # export, load back: the loaded model must predict what the model in memory predicts, to the bit
    runs = [str(Path(p).parent) for p in run_models]
    spec = final.model_spec(**base, temperature=temp["temperature"], choice=choice, calibration=temp, n=n, runs=runs)
    final.export(out_model, members, spec)
    loaded = final.load(out_model)
    in_memory = cal.apply_temperature(p_val, temp["temperature"], task["type"])
    val_table, bad = final.predict_paths(loaded, list(parts["val"]["path"]), progress=False)
    if bad or not np.array_equal(val_table.filter(like="p_").to_numpy(), in_memory.astype(np.float64)):
        raise InputError(f"the exported model {out_model} does not predict what it was made from: {bad}")

    # test: the predictions `smalldl predict` gives (plain, and with TTA), as the recorded test AUC
    test_table, bad = final.predict_paths(loaded, list(parts["test"]["path"]), progress=False)
    tta_table, _ = final.predict_paths(loaded, list(parts["test"]["path"]), tta=True, progress=False)
    if bad:
        raise InputError(f"test images of {task_name} could not be read: {bad}")
    names = loaded.names
    p_test = test_table[[f"p_{k}" for k in names]].to_numpy()
    p_test_tta = tta_table[[f"p_{k}" for k in names]].to_numpy()
    p_val_cal = val_table[[f"p_{k}" for k in names]].to_numpy()
    out_pred = test_table.assign(image_id=list(parts["test"]["image_id"]))
    for j, k in enumerate(names):
        out_pred[f"y_{k}"] = y["test"][:, j]
        out_pred[f"p_tta_{k}"] = p_test_tta[:, j]
    with atomic_path(out_predictions) as tmp:
        out_pred.to_csv(tmp, index=False)

    level, iterations = float(results["ci"]), int(results["bootstrap"])
    patients = parts["test"]["patient_id"].to_numpy()
    boot_seed = derive_seed(global_seed, "final", task_name, "bootstrap")
    metrics = _scores(y, p_val_cal, p_test, p_test_tta, names, patients, level, iterations, boot_seed, task)
    metrics.update(task=task_name, arch=arch, recipe=recipe, n=n, choice=choice, calibration=temp,
                   commit=spec["commit"], model=str(out_model))  # fmt: skip
    metrics["recommended_because"] = recommendation_words(answer_csv, task_name, arch, recipe)
    metrics["recipe_interval"] = _recipe_interval(seed_means_csv, task_name, arch, recipe, n)
    metrics["operating_points"] = _operating_points(
        y, p_val_cal, p_test, names, parts["test"], level, iterations, boot_seed
    )
    metrics["reliability"] = {k: cal.reliability(y["test"][:, j], p_test[:, j]) for j, k in enumerate(names)}
    metrics["reliability_uncalibrated"] = {
        k: cal.reliability(y["test"][:, j], cal.apply_temperature(p_test, 1 / temp["temperature"], task["type"])[:, j])
        for j, k in enumerate(names)
    } if temp["temperature"] != 1.0 else None  # fmt: skip
    metrics["runs"] = [{"seed": r.get("seed"), "val_auc": r.get("val_auc"), "test_auc": r.get("test_auc"),
                        "test_auc_tta": r.get("test_auc_tta")} for r in records]  # fmt: skip
    metrics["sizes"] = {"val": len(parts["val"]), "test": len(parts["test"]), "train": n,
                        "test_patients": int(pd.Series(patients).nunique())}  # fmt: skip

    # where the model looks: a seeded sample of the test images, at the Youden threshold chosen on validation
    label = _cam_label(y["test"], names)
    j = names.index(label)
    threshold = cal.youden_threshold(y["val"][:, j], p_val_cal[:, j])
    sample = _cam_sample(y["test"][:, j], p_test[:, j], threshold, derive_seed(global_seed, "final", task_name, "cam"))
    from smalldl import cam

    idx = [i for _, i in sample]
    crops, maps = cam.cam_maps(loaded, images["test"][idx], j) if idx else (np.zeros((0, 1, 1)), np.zeros((0, 1, 1)))
    titles = [f"{kind}: {parts['test']['image_id'].iloc[i]} p={p_test[i, j]:.2f}" for kind, i in sample]
    title = f"{task_name}: Grad-CAM of {label} (threshold {threshold:.3f}); rows: " + ", ".join(cam.CATEGORIES)
    cam.draw(crops, maps, titles, out_cam, title, per_row=CAM_PER_KIND)
    ids = parts["test"]["image_id"]
    metrics["cam"] = {
        "label": label,
        "threshold": threshold,
        "sample": [{"kind": k, "image_id": str(ids.iloc[i])} for k, i in sample],
    }
    _plot_reliability(metrics, names, out_reliability, task_name)
    write_json(out_metrics, metrics)
    lines = card_lines(metrics, task, Path(out_cam).name, Path(out_reliability).name)
    with atomic_path(out_card) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    from smalldl.results.answer import html_page

    with atomic_path(out_html) as tmp:
        Path(tmp).write_text(html_page(lines, f"Model card: {task_name}"))
    print(f"final model {task_name}: {choice['kind']} of seeds {choice['seeds']} ({choice['why']}); "
          f"test AUC {metrics['test_auc']:.4f}", file=sys.stderr)  # fmt: skip
    return metrics


def ensemble_choice(seed_aucs: Mapping[int, float], ensemble_auc: float) -> dict[str, Any]:
    """Which members make the final model, from validation AUCs alone: the ensemble of every seed unless
    one seed's AUC is above the ensemble's (then that seed, ties to the lower seed); one seed: that one.
    {kind: ensemble | single, seeds, why}."""
    seeds = list(seed_aucs)
    if len(seeds) == 1:
        return {"kind": "single", "seeds": seeds, "why": "the study has one seed"}
    best = max(seeds, key=lambda s: (_nan_low(seed_aucs[s]), -s))
    if _nan_low(ensemble_auc) >= _nan_low(seed_aucs[best]):
        why = f"the ensemble's validation AUC {ensemble_auc:.4f} is at least the best seed's"
        why += f" ({best}: {seed_aucs[best]:.4f})"
        return {"kind": "ensemble", "seeds": seeds, "why": why}
    why = f"seed {best}'s validation AUC {seed_aucs[best]:.4f} is above the ensemble's {ensemble_auc:.4f}"
    return {"kind": "single", "seeds": [best], "why": why}


def _nan_low(x: float) -> float:
    return -math.inf if x is None or math.isnan(x) else x


def _cam_label(y: np.ndarray, names: Sequence[str]) -> str:
    """The label of the class-activation figure: the one with the most test positives (binary: the label)."""
    counts = [(int((y[:, j] == 1).sum()), -j) for j in range(len(names))]
    return names[-max(counts)[1]]


def _cam_sample(y: np.ndarray, p: np.ndarray, threshold: float, seed: int) -> list[tuple[str, int]]:
    from smalldl import cam

    if math.isnan(threshold):
        return []
    return cam.cam_sample(y, p, threshold, k=CAM_PER_KIND, seed=seed)


def _scores(y, p_val, p_test, p_test_tta, names, patients, level, iterations, seed, task) -> dict[str, Any]:
    """AUCs (validation, test, test with TTA; per label) and the test AUC's interval over test patients,
    Brier and ECE per label."""
    from smalldl import calibration as cal
    from smalldl import stats

    val_auc, _, _ = _mean_auc(y["val"], p_val)
    test_auc, _, per = _mean_auc(y["test"], p_test)
    tta_auc, _, per_tta = _mean_auc(y["test"], p_test_tta)
    strata = (y["test"] == 1).any(axis=1).astype(float)
    weights = stats.bootstrap_weights(
        len(patients), iterations, np.random.default_rng(seed), strata=strata, groups=patients
    )
    reps = stats.mean_auc_replicates(y["test"], p_test, weights)
    lo, hi = stats.percentile_ci(reps, level)
    return {
        "val_auc": val_auc,
        "test_auc": test_auc,
        "test_auc_lo": lo,
        "test_auc_hi": hi,
        "test_auc_tta": tta_auc,
        "level": level,
        "per_label": {
            k: {"test_auc": float(per[j]), "test_auc_tta": float(per_tta[j]),
                "test_positives": int((y["test"][:, j] == 1).sum()), "val_positives": int((y["val"][:, j] == 1).sum()),
                **cal.summary(y["test"][:, j], p_test[:, j])}
            for j, k in enumerate(names)
        },
    }  # fmt: skip


def _operating_points(y, p_val, p_test, names, test_table, level, iterations, seed) -> list[dict[str, Any]]:
    """Operating points per label (thresholds on validation, read on test), overall and by view."""
    from smalldl import calibration as cal

    rows = []
    views = sorted(test_table["view"].dropna().astype(str).unique()) if "view" in test_table else []
    groups = [("all", np.ones(len(test_table), dtype=bool))]
    if len(views) > 1:
        groups += [(v, (test_table["view"].astype(str) == v).to_numpy()) for v in views]
    patients = test_table["patient_id"].to_numpy()
    for j, k in enumerate(names):
        for view, sel in groups:
            for row in cal.operating_points(y["val"][:, j], p_val[:, j], y["test"][sel, j], p_test[sel, j],
                                            patients[sel], level=level, iterations=iterations, seed=seed):  # fmt: skip
                rows.append({"label": k, "view": view, **row})
    return rows


def _recipe_interval(seed_means_csv: str | Path, task: str, arch: str, recipe: str, n: int) -> dict[str, Any] | None:
    """The recipe's test AUC at size n over seeds and test patients (the study's inference: seed_means.csv)."""
    table = read_table(seed_means_csv)
    hit = table[(table["task"] == task) & (table["arch"] == arch) & (table["recipe"] == recipe) & (table["n"] == n)]
    if not len(hit):
        return None
    r = hit.iloc[0]
    return {
        k: (r[k].item() if hasattr(r[k], "item") else r[k])
        for k in ("mean", "ci_lo", "ci_hi", "band", "count", "select_mean")
    }


def _plot_reliability(metrics: Mapping[str, Any], names: Sequence[str], out: str | Path, task: str) -> None:
    """The reliability diagram on test of every label (one panel per label, at most 16)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(names)[:16]
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax, k in zip(axes.ravel(), shown, strict=False):
        for key, style in (("reliability_uncalibrated", ":"), ("reliability", "-")):
            if not metrics.get(key):
                continue
            bins = [b for b in metrics[key][k] if b["count"]]
            ax.plot([b["mean_p"] for b in bins], [b["observed"] for b in bins], style, marker="o", ms=3,
                    label="with temperature" if key == "reliability" else "without")  # fmt: skip
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        pl = metrics["per_label"][k]
        ax.set_title(f"{k}: Brier {pl['brier']:.3f}, ECE {pl['ece']:.3f}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted probability", fontsize=7)
        ax.set_ylabel("observed fraction", fontsize=7)
    for ax in axes.ravel()[len(shown) :]:
        ax.set_axis_off()
    fig.suptitle(f"{task}: reliability on test", fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(out).suffix.lstrip(".") or "png")
    plt.close(fig)


def _f(x: Any, digits: int = 3) -> str:
    try:
        return "n/a" if x is None or math.isnan(float(x)) else f"{float(x):.{digits}f}"
    except (TypeError, ValueError):
        return str(x)


def card_lines(m: Mapping[str, Any], task: Mapping[str, Any], cam_png: str, reliability_png: str) -> list[str]:
    """The model card (markdown lines)."""
    pct = f"{100 * m['level']:.0f}%"
    choice = m["choice"]
    what = (
        "An ensemble (mean probability) of the models of seeds "
        if choice["kind"] == "ensemble"
        else "The model of seed "
    )
    cal_ = m["calibration"]
    lines = [
        f"# Model card: {m['task']}",
        "",
        "## Intended use",
        "",
        f"Research and teaching: a {task['type']} classifier of {', '.join(task['labels'])} trained on a small "
        "dataset, to show what the recipe gives on data like the study's. **Not a medical device**: not "
        "validated for diagnosis, triage or any clinical decision; its numbers hold for images like the "
        "study's test set (same source, preprocessing and label definitions) and nothing else.",
        "",
        "## Model",
        "",
        f"- Architecture `{m['arch']}`, recipe `{m['recipe']}`, recommended by the study (results/answer.csv, "
        f"results/README.md) as {m.get('recommended_because', 'the recipe answer.csv recommends')}; trained on "
        f"n = {m['n']} images, the largest size of the study.",
        f"- {what}{', '.join(map(str, choice['seeds']))}: {choice['why']}.",
        f"- Temperature {cal_['temperature']:.3f} ("
        + (f"fitted on validation, it lowered the validation NLL from {cal_['nll_before']:.4f} to "
           f"{cal_['nll_after']:.4f}" if cal_["used"] else
           f"the one fitted on validation, {cal_['fitted']:.3f}, lowered the validation NLL by less than 1%: "
           "not applied") + "); `smalldl predict` applies it.",
        f"- Code commit `{m['commit']}`; `model/model.json` holds the preprocessing (width, height, crop, grey "
        "levels, DICOM polarity, normalisation) and the label names.",
        "",
        "## Data",
        "",
        f"Training subset of {m['sizes']['train']} images; validation {m['sizes']['val']} images; test "
        f"{m['sizes']['test']} images of {m['sizes']['test_patients']} patients (split by patient: "
        "results/splits/). Thresholds and the temperature are chosen on validation; test only reports.",
        "",
        "## Performance",
        "",
        f"- Validation AUC {_f(m['val_auc'])}; test AUC {_f(m['test_auc'])} ({pct} CI {_f(m['test_auc_lo'])}-"
        f"{_f(m['test_auc_hi'])}, resampling test patients: this model is fixed), with test-time augmentation "
        f"(`--tta`) {_f(m['test_auc_tta'])}.",
    ]  # fmt: skip
    ri = m.get("recipe_interval")
    if ri:
        over = "test patients only (too few seeds)" if ri["band"] == "test" else "seeds and test patients"
        lines.append(
            f"- The recipe at n = {m['n']} over the study's training runs: mean test AUC {_f(ri['mean'])} "
            f"({pct} CI {_f(ri['ci_lo'])}-{_f(ri['ci_hi'])}, interval over {over}; "
            "what another training run of the recipe would give)."
        )  # fmt: skip
    lines += ["", "| label | test AUC | with TTA | test positives | Brier | ECE |", "|---|---|---|---|---|---|"]
    for k, pl in m["per_label"].items():
        lines.append(f"| {k} | {_f(pl['test_auc'])} | {_f(pl['test_auc_tta'])} | {pl['test_positives']} | "
                     f"{_f(pl['brier'])} | {_f(pl['ece'])} |")  # fmt: skip
    lines += [
        "",
        "## Calibration (test)",
        "",
        f"Reliability diagram: results/figures/{reliability_png} (10 equal bins; Brier score and expected "
        "calibration error per label in the table above).",
        "",
        "## Operating points (thresholds chosen on validation, read on test)",
        "",
        f"Sensitivity 0.90, 0.95 and Youden's J; PPV and NPV at the test prevalence; {pct} intervals resample "
        "test patients.",
        "",
        "| label | view | point | threshold | prevalence | sensitivity | specificity | PPV | NPV |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in m["operating_points"]:

        def ci(key: str, r: Mapping[str, Any] = r) -> str:
            return f"{_f(r.get(key))} ({_f(r.get(key + '_lo'))}-{_f(r.get(key + '_hi'))})"

        lines.append(f"| {r['label']} | {r['view']} | {r['point']} | {_f(r['threshold'])} | {_f(r['prevalence'])} | "
                     f"{ci('sensitivity')} | {ci('specificity')} | {ci('ppv')} | {ci('npv')} |")  # fmt: skip
    lines += ["", "## Where the model looks", "",
              f"Grad-CAM of {m['cam']['label']} over a seeded sample of test images (the {CAM_PER_KIND} most "
              "confident true positives, false positives and false negatives at the Youden threshold): "
              f"results/figures/{cam_png}. `smalldl predict --cam DIR` draws them for new images.",
              "", "## Limitations", ""]  # fmt: skip
    lim = []
    for k, pl in m["per_label"].items():
        if not math.isnan(pl["test_auc"]) and pl["test_auc"] < 0.5:
            lim.append(f"- {k}: test AUC {_f(pl['test_auc'])} is below chance: do not use this output.")
        if pl["val_positives"] < FEW_POSITIVES:
            lim.append(
                f"- {k}: {pl['val_positives']} validation positives chose the thresholds and the temperature: "
                "their sensitivity on new data may differ from the target."
            )
        if pl["test_positives"] < FEW_POSITIVES:
            lim.append(f"- {k}: {pl['test_positives']} test positives: its AUC and operating points are uncertain.")
    lo = m.get("test_auc_lo")
    if lo is not None and not math.isnan(lo) and lo < 0.5:
        lim.append("- The test AUC's interval reaches below 0.5: the model may be no better than chance.")
    lim += [
        f"- Trained on {m['n']} images: the study's sizes end there; images from another scanner, site, "
        "population or preprocessing are an extrapolation the study did not measure.",
        "- Probabilities are calibrated on the validation set's prevalence; PPV and NPV change with prevalence.",
    ]
    return lines + lim
