"""rules/results.smk: the summary table, Table 1, the statistics (bootstrap CIs, paired comparisons, stage
winners, learning curves), the figures and results/README.md. Each job reads its rule's input files, calls
the library (``smalldl.results``, ``smalldl.plots``) and writes its outputs. Only the plotting jobs import
smalldl.plots (matplotlib, seaborn), so that the others start fast."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smalldl.errors import InputError
from smalldl.results import answer, comparisons, curves, intervals, readme, sources, summary
from smalldl.results import findings as claims
from smalldl.utils import atomic_path

# ------------------------------------------------------------------------------------------ helpers


def _write_csv(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _read_table(path: str | Path) -> pd.DataFrame:
    """A results table (parquet or CSV; an empty CSV is an empty table) for the figures."""
    path = Path(path)
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, ValueError) as exc:
        raise InputError(f"results table {path} cannot be read ({exc})") from None


def _save_replicates(
    path: str | Path,
    keys: Sequence[str],
    reps: np.ndarray,
    val_keys: Sequence[str] = (),
    val_reps: np.ndarray | None = None,
) -> None:
    """The bootstrap replicates (runs x iterations) with the runs' paths as keys: of the test AUCs and,
    for the CNN runs, of the validation AUCs (the answer's selection)."""
    val_reps = np.zeros((0, reps.shape[1] if reps.ndim == 2 else 0), np.float32) if val_reps is None else val_reps
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            keys=np.asarray(list(keys), dtype=str),
            reps=reps,
            val_keys=np.asarray(list(val_keys), dtype=str),
            val_reps=val_reps,
        )


def _load_replicates(path: str | Path, split: str = "test") -> tuple[list[str], np.ndarray]:
    """The test (``split`` 'test') or validation ('val') replicates and their runs' paths."""
    prefix = "" if split == "test" else "val_"
    try:
        with np.load(path) as data:
            return [str(k) for k in data[f"{prefix}keys"]], data[f"{prefix}reps"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"bootstrap replicates {path} cannot be read ({exc}); rerun rule bootstrap") from None


# ------------------------------------------------------------------------------------------ tables


def aggregate(
    *,
    metrics: Sequence[str | Path],
    out_parquet: str | Path,
    out_csv: str | Path,
    metric: str,
    select_on: str,
    threads: int = 1,
) -> pd.DataFrame:
    """One row per run (``metrics``: every run's metrics.json) in results/summary.{parquet,csv}."""
    table = summary.read_metrics(metrics, metric=metric, select_on=select_on, workers=max(4, threads))
    with atomic_path(out_parquet) as tmp:
        table.to_parquet(tmp, index=False)
    _write_csv(table, out_csv)
    print(f"{len(table)} runs")
    if len(table):
        print(summary.mean_table(table).to_string(index=False))
    return table


def table1(
    *,
    manifests: Mapping[str, str | Path],
    targets: Sequence[str],
    tasks: Mapping[str, Mapping[str, Any]],
    sizes: Sequence[int] = (),
    out_csv: str | Path,
) -> pd.DataFrame:
    """Table 1 from the split manifests (task -> manifest.json); ``tasks``: each task's type, labels and
    balance; ``sizes``: the study's training sizes (the positives of each training subset)."""
    table = summary.table1(manifests, targets, tasks, sizes)
    _write_csv(table, out_csv)
    print(table.to_string(index=False))
    return table


def bootstrap(
    *,
    summary_parquet: str | Path,
    split_parquets: Sequence[str | Path],
    settings: Mapping[str, Any],
    select_on: str,
    global_seed: int,
    out_run_ci: str | Path,
    out_seed_means: str | Path,
    out_replicates: str | Path,
) -> None:
    """Each run's test AUC with its bootstrap CI, the means over seeds, the replicates (test, and the CNN
    runs' validation AUCs), resampling patients (``split_parquets``: the targets' split tables).
    ``settings``: results.metric, .ci and .bootstrap."""
    table = pd.read_parquet(summary_parquet)
    patients = intervals.read_patients(split_parquets)
    run_ci, reps = intervals.bootstrap(
        table, settings["bootstrap"], settings["ci"], global_seed, settings["metric"], patients=patients
    )
    val_keys, val_reps = intervals.val_bootstrap(
        table, settings["bootstrap"], global_seed, select_on, patients=patients
    )
    means = intervals.seed_means(table, list(table["path"]), reps, settings["ci"])
    _write_csv(run_ci, out_run_ci)
    _write_csv(means, out_seed_means)
    _save_replicates(out_replicates, list(table["path"]), reps, val_keys, val_reps)
    for line in answer.below_chance_warnings(out_seed_means):
        print(line)


def compare(
    *,
    summary_parquet: str | Path,
    replicates_npz: str | Path,
    stage_files: Sequence[str | Path],
    figures: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
    select_on: str,
    out_comparisons: str | Path,
    out_stages: str | Path,
    out_answer: str | Path,
) -> None:
    """Paired comparisons of recipes, the stage winners with their margins and the comparisons behind the
    answer (answer.csv: chosen on the validation replicates). ``figures``: the axis figures (kind, axis,
    archs, stage, recipes); ``settings``: results.metric, .ci, .comparison, .equivalence_margin."""
    table = pd.read_parquet(summary_parquet)
    keys, reps = _load_replicates(replicates_npz)
    val_keys, val_reps = _load_replicates(replicates_npz, "val")
    missing = sorted(set(table["path"]) - set(keys))
    if missing:
        raise InputError(f"bootstrap replicates {replicates_npz} lack run {missing[0]}; rerun rule bootstrap")
    pairs = comparisons.compare(table, keys, reps, settings["ci"], settings["comparison"], settings["metric"])
    stages = [comparisons.read_stage(p) for p in stage_files]
    specs = comparisons.stage_specs(table, stages, figures, select_on)
    stage_table = comparisons.stage_table(table, keys, reps, specs, settings["ci"])
    answer_rows = answer.answer_table(
        table, keys, reps, settings["ci"], settings["comparison"], settings["metric"],
        val_keys=val_keys, val_reps=val_reps, margin=settings["equivalence_margin"],
    )  # fmt: skip
    _write_csv(pairs, out_comparisons)
    _write_csv(stage_table, out_stages)
    _write_csv(answer_rows, out_answer)


def learning_curves(
    *,
    summary_parquet: str | Path,
    replicates_npz: str | Path,
    settings: Mapping[str, Any],
    global_seed: int,
    out_csv: str | Path,
) -> pd.DataFrame:
    """The learning-curve fits. ``settings``: results.ci, .target_auc and .learning_curve; the runs' test
    bootstrap replicates put the test patients' variation in the interval of the size needed."""
    table = pd.read_parquet(summary_parquet)
    keys, reps = _load_replicates(replicates_npz)
    lc = settings["learning_curve"]
    fits = curves.learning_curves(
        table, settings["target_auc"], lc["model"], settings["ci"], lc["bootstrap"], global_seed, keys, reps
    )
    _write_csv(fits, out_csv)
    print(fits.to_string(index=False))
    return fits


def _csv(path: str | Path) -> pd.DataFrame:
    """A results CSV written by a rule (an empty file is an empty table)."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def findings(
    *,
    summary_parquet: str | Path,
    replicates_npz: str | Path,
    comparisons_csv: str | Path,
    curves_csv: str | Path,
    anatomy: Mapping[str, Mapping[str, str | None]],
    targets: Sequence[str],
    archs: Sequence[str],
    settings: Mapping[str, Any],
    out_csv: str | Path,
) -> pd.DataFrame:
    """results/findings.csv: the paper's claims tested on the study (``smalldl.results.findings``).
    ``anatomy``: target -> source -> same/other/natural; ``settings``: results.ci, .equivalence_margin,
    .target_auc."""
    table = pd.read_parquet(summary_parquet)
    keys, reps = _load_replicates(replicates_npz)
    comp = _csv(comparisons_csv)
    if comp.empty:
        comp = pd.DataFrame(columns=["task", "n", "family_a", "arch_a", "recipe_a", "family_b", "arch_b", "recipe_b"])
    result = claims.findings(table, comp, keys, reps, _csv(curves_csv), anatomy, settings, targets, archs)
    _write_csv(result, out_csv)
    print(result[["claim", "task", "arch", "n", "comparison", "difference", "verdict"]].to_string(index=False))
    return result


def source_models(*, metas: Sequence[str | Path], settings: Mapping[str, Any], out_csv: str | Path) -> pd.DataFrame:
    """results/source_models.csv: every source model's chain and validation AUC with its CI and flag
    (``smalldl.results.sources``), from the models' metadata JSONs. ``settings``: results.ci."""
    table = sources.source_table([sources.read_meta(p) for p in metas], settings["ci"])
    _write_csv(table, out_csv)
    print(table.to_string(index=False))
    return table


# ----------------------------------------------------------------------------------------- figures


def plot_auc_vs_n(
    *, seed_means_csv: str | Path, title: str, options: Mapping[str, Any], out_figures: Sequence[str | Path]
) -> None:
    """Mean test AUC vs training size. ``options``: the plots settings."""
    from smalldl import plots

    plots.auc_vs_size(_read_table(seed_means_csv), options, out_figures, title=title)


def plot_history(
    *,
    summary_parquet: str | Path,
    spec: Mapping[str, Any],
    targets: Sequence[str],
    archs: Sequence[str],
    options: Mapping[str, Any],
    out_figures: Sequence[str | Path],
) -> dict[str, Any]:
    """Figures 1-2: pick the run (``plots.history_run``), read its history.csv next to its metrics.json.
    ``spec``: the figure's id, title and run selection."""
    from smalldl import plots

    run = plots.history_run(_read_table(summary_parquet), spec["select"], targets, archs)
    steps = plots.read_history(Path(run["path"]) / "history.csv")
    plots.history_figure(spec, run, steps, options, out_figures)
    print(f"{spec['id']}: history of {run['path']}")
    return run


def plot_axis(
    *,
    summary_parquet: str | Path,
    seed_means_csv: str | Path,
    stage_files: Sequence[str | Path],
    spec: Mapping[str, Any],
    options: Mapping[str, Any],
    out_figures: Sequence[str | Path],
) -> None:
    """Figures 3-8. ``spec``: the figure's kind (axis or radiomics), title, archs and, for an axis figure,
    its axis, stage and listed recipes."""
    from smalldl import plots

    table = _read_table(summary_parquet)
    means = _read_table(seed_means_csv)
    if spec["kind"] == "radiomics":
        plots.radiomics_figure(spec, table, means, options, out_figures)
        return
    stages = {}
    for path in stage_files:
        stage = comparisons.read_stage(path)
        stages[(stage["task"], stage["arch"])] = stage
    plots.axis_figure(spec, means, plots.axis_panels(spec, table, stages), options, out_figures)


def plot_learning_curves(
    *,
    curves_csv: str | Path,
    seed_means_csv: str | Path,
    target: float,
    options: Mapping[str, Any],
    out_figures: Sequence[str | Path],
) -> None:
    """The fitted learning curves with the target AUC."""
    from smalldl import plots

    plots.learning_curves_figure(_read_table(curves_csv), _read_table(seed_means_csv), target, options, out_figures)


# --------------------------------------------------------------------------------------- README.md


def results_readme(
    *,
    summary_parquet: str | Path,
    seed_means_csv: str | Path,
    stages_csv: str | Path,
    curves_csv: str | Path,
    table1_csv: str | Path,
    comparisons_csv: str | Path,
    answer_csv: str | Path,
    figures: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
    out_readme: str | Path,
    out_answer_html: str | Path,
    findings_csv: str | Path | None = None,
    sources_csv: str | Path | None = None,
) -> None:
    """results/README.md, the answer first, and the answer alone as results/answer.html (for the HTML
    report). ``figures``: every figure's title and config line; ``settings``: results.metric, .ci,
    .target_auc and .equivalence_margin; ``findings_csv``, ``sources_csv``: the findings and the source
    models (their sections)."""
    csv = _csv

    table = pd.read_parquet(summary_parquet)
    means, curve_fits, answer_rows = csv(seed_means_csv), csv(curves_csv), csv(answer_csv)
    source_models = None if sources_csv is None else csv(sources_csv)
    text = readme.render(
        table,
        means,
        csv(stages_csv),
        curve_fits,
        csv(table1_csv),
        csv(comparisons_csv),
        figures,
        settings,
        findings=None if findings_csv is None else csv(findings_csv),
        source_models=source_models,
        answer_rows=answer_rows,
    )
    page = answer.html_page(
        answer.answer_section(table, means, answer_rows, curve_fits, settings, source_models), "Answer"
    )
    with atomic_path(out_readme) as tmp:
        Path(tmp).write_text(text)
    with atomic_path(out_answer_html) as tmp:
        Path(tmp).write_text(page)
