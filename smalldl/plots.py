"""The figures (seaborn/matplotlib). Plot settings come from config['plots'] and only plotting rules read
them; the statistics they draw (means over seeds, confidence bands, learning-curve fits) are computed by
the results rules and read from their tables (by the plotting jobs, smalldl.jobs.results), so restyling a
figure recomputes nothing.

Which runs and recipes a figure shows is decided here from those tables (``history_run``, ``axis_panels``,
``radiomics_lines``), plain functions with unit tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator  # noqa: E402

from smalldl import stats  # noqa: E402
from smalldl.config import Recipe  # noqa: E402
from smalldl.errors import InputError  # noqa: E402
from smalldl.figures import axis_value  # noqa: E402
from smalldl.utils import atomic_path  # noqa: E402

HEADLINE = "test AUC"


# -------------------------------------------------------------------------------------------- helpers


def _theme(options: Mapping[str, Any]) -> None:
    sns.set_theme(style=options["style"], context=options["context"], palette=options.get("palette", "deep"))


def save(fig: plt.Figure, outputs: Sequence[str | Path], options: Mapping[str, Any]) -> None:
    """Write the figure once per output path, in the format its suffix names, atomically."""
    for out in outputs:
        out = Path(out)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=options["dpi"], bbox_inches="tight", format=out.suffix.lstrip("."))
    plt.close(fig)


def band(rows: pd.DataFrame, errorbar: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge of the band around the mean over seeds: the confidence interval (``ci``), mean
    +- sd or se, or the percentile interval of the seeds (``pi``); clipped to [0, 1]."""
    mean = rows["mean"].to_numpy(dtype=float)
    if errorbar == "ci":
        lo, hi = rows["ci_lo"].to_numpy(dtype=float), rows["ci_hi"].to_numpy(dtype=float)
    elif errorbar in ("sd", "se"):
        half = rows[errorbar].to_numpy(dtype=float)
        lo, hi = mean - half, mean + half
    elif errorbar == "pi":
        lo, hi = rows["pi_lo"].to_numpy(dtype=float), rows["pi_hi"].to_numpy(dtype=float)
    else:
        raise InputError(f"config key plots.errorbar: unknown band {errorbar!r}")
    return np.clip(lo, 0, 1), np.clip(hi, 0, 1)


def _size_axis(ax: plt.Axes, sizes: Sequence[int]) -> None:
    ax.set_xscale("log")
    sizes = sorted({int(s) for s in sizes})
    if sizes:
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_major_formatter(FixedFormatter([str(v) for v in sizes]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training images")


def _grid(rows: int, cols: int, sharex: bool = True) -> tuple[plt.Figure, np.ndarray]:
    return plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharex=sharex)


def _arch_task_panels(means: pd.DataFrame, sharex: bool = True):
    """A row of panels per architecture, a column per task, one colour per recipe ("no runs" if empty).
    Returns (figure, axes, archs, tasks, colours)."""
    tasks = sorted(means["task"].unique()) if len(means) else []
    archs = list(dict.fromkeys(means["arch"])) if len(means) else []
    fig, axes = _grid(max(1, len(archs)), max(1, len(tasks)), sharex=sharex)
    colors = _palette(list(means["recipe"].astype(str))) if len(means) else {}
    if not len(means):
        _empty(axes[0][0], "no runs")
    return fig, axes, archs, tasks, colors


def _line(ax: plt.Axes, rows: pd.DataFrame, label: str, color: Any, errorbar: str, style: str = "-") -> None:
    rows = rows.sort_values("n")
    x = rows["n"].to_numpy(dtype=float)
    ax.plot(x, rows["mean"], style, marker="o", ms=4, color=color, label=label)
    lo, hi = band(rows, errorbar)
    ok = ~(np.isnan(lo) | np.isnan(hi))
    if ok.sum() >= 1:
        ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.18, linewidth=0)


def _legend(fig: plt.Figure, axes: np.ndarray, title: str) -> None:
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if handles:
        axes.flat[0].figure.legend(
            [handles[lab] for lab in labels],
            labels,
            title=title,
            loc="upper left",
            bbox_to_anchor=(1.0, 0.95),
            frameon=False,
        )


def _palette(labels: Sequence[str]) -> dict[str, Any]:
    labels = list(dict.fromkeys(labels))
    colors = (
        sns.color_palette(n_colors=max(1, len(labels))) if len(labels) <= 10 else sns.color_palette("husl", len(labels))
    )
    return dict(zip(labels, colors, strict=True))


def _empty(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize="small", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------------------- auc_vs_n


def auc_vs_size(
    means: pd.DataFrame,
    options: Mapping[str, Any],
    outputs: Sequence[str | Path],
    title: str = "Test AUC vs training size",
) -> None:
    """Mean test AUC over seeds against training size with a band (plots.errorbar), one line per recipe,
    one panel per task and a row per architecture."""
    _theme(options)
    fig, axes, archs, tasks, colors = _arch_task_panels(means)
    for i, arch in enumerate(archs):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            part = means[(means["task"] == task) & (means["arch"] == arch)]
            for recipe, rows in part.groupby("recipe", sort=True):
                _line(ax, rows, str(recipe), colors[str(recipe)], options["errorbar"])
            _size_axis(ax, part["n"])
            ax.set_title(f"{task} ({arch})")
            ax.set_ylabel(HEADLINE if j == 0 else "")
    _legend(fig, axes, "recipe")
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, outputs, options)


# ----------------------------------------------------------------------------- Figures 1-2: history


def history_run(summary: pd.DataFrame, select: Mapping[str, str], targets: Sequence[str], archs: Sequence[str]) -> dict:
    """The run whose history a schedule figure shows: among CNN runs matching ``select`` (e.g.
    {"schedule": "onecycle"}), the first target and architecture in config order, then recipes with a
    source before scratch, fine-tuned before other transfer methods, standard transfer init before other
    inits (then alphabetical), the largest n, the smallest seed."""
    runs = summary[summary.get("family", pd.Series("cnn", index=summary.index)).fillna("cnn") == "cnn"]
    for key, value in select.items():
        runs = runs[runs[key] == value]
    if runs.empty:
        raise InputError(f"no run with {', '.join(f'{k}={v}' for k, v in select.items())} in the summary")
    t_order = {t: i for i, t in enumerate(targets)}
    a_order = {a: i for i, a in enumerate(archs)}
    runs = runs.assign(
        _t=runs["task"].map(t_order).fillna(len(t_order)),
        _a=runs["arch"].map(a_order).fillna(len(a_order)),
        _s=(runs["source"] == "none").astype(int),
        _f=(runs["transfer"] != select.get("transfer", "finetune")).astype(int),
        _i=(runs["init"] != "transfer").astype(int),
    )
    order = ["_t", "_a", "_s", "_f", "_i", "recipe", "n", "seed"]
    runs = runs.sort_values(order, ascending=[True] * 6 + [False, True], kind="mergesort")
    return runs.iloc[0].drop(["_t", "_a", "_s", "_f", "_i"]).to_dict()


def read_history(path: str | Path) -> pd.DataFrame:
    try:
        history = pd.read_csv(path, dtype={"trainable": str})  # "3" is a group list, not a number
    except (OSError, ValueError) as exc:
        raise InputError(f"run history {path} cannot be read ({exc})") from None
    if "kind" not in history or "lr" not in history or "step" not in history:
        raise InputError(f"run history {path}: needs the columns kind, step and lr")
    steps = history[history["kind"] == "step"].reset_index(drop=True)
    if steps.empty:
        raise InputError(f"run history {path}: no optimizer steps recorded")
    return steps


def unfreeze_points(steps: pd.DataFrame) -> list[tuple[int, str]]:
    """(step, what) at each change of the trainable groups: the first step with a newly unfrozen group."""
    if "trainable" not in steps:
        return []
    out = []
    previous: set[str] | None = None
    for step, value in zip(steps["step"], steps["trainable"].astype(str), strict=True):
        groups = {g.strip() for g in value.split(",") if g.strip() and g.strip() != "nan"}
        if previous is not None and groups - previous:
            out.append((int(step), "unfreeze group " + ", ".join(sorted(groups - previous))))
        previous = groups
    return out


def history_figure(
    spec: Mapping[str, Any], run: Mapping[str, Any], steps: pd.DataFrame, options: Mapping[str, Any], outputs: Sequence
) -> None:
    """Figure 1 (lr and momentum of a one-cycle run) or Figure 2 (the layer groups' lrs with the unfreeze
    points), from the run's recorded optimizer steps."""
    _theme(options)
    who = f"{run['task']} / {run['arch']} / {run['recipe']} / n={run['n']} / seed {run['seed']}"
    x = steps["step"].to_numpy(dtype=float)
    if spec["select"].get("transfer") == "gradual":
        fig, axes = _grid(1, 1, sharex=False)
        ax = axes[0][0]
        groups = [c for c in ("lr_group1", "lr_group2", "lr_group3") if c in steps and steps[c].notna().any()]
        colors = _palette(groups or ["lr"])
        if not groups:
            ax.plot(x, steps["lr"], label="lr (per-group lrs not recorded)", color=colors["lr"])
        for col in groups:
            g = col[-1]
            lr = steps[col].to_numpy(dtype=float)
            trains = (
                steps["trainable"].astype(str).map(lambda v, g=g: g in {s.strip() for s in v.split(",")}).to_numpy()
                if "trainable" in steps
                else np.ones(len(steps), dtype=bool)
            )
            frozen = ~trains
            frozen[1:] |= frozen[:-1]  # the dotted part reaches the first trained step: no gap
            ax.plot(x, np.where(trains, lr, np.nan), "-", color=colors[col], label=f"group {g}")
            ax.plot(x, np.where(frozen, lr, np.nan), ":", color=colors[col], alpha=0.7)
        for step, what in unfreeze_points(steps):
            ax.axvline(step, color="0.4", lw=0.8, ls="--")
            ax.annotate(what, (step, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                        fontsize="x-small")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("iteration (optimizer step)")
        ax.set_ylabel("learning rate")
        ax.legend(frameon=False, fontsize="small")
    else:
        fig, axes = _grid(1, 2, sharex=False)
        lr_ax, mom_ax = axes[0]
        lr_ax.plot(x, steps["lr"], color="C0")
        lr_ax.set_ylabel("learning rate")
        peak = int(np.nanargmax(steps["lr"].to_numpy(dtype=float)))
        lr_ax.axvline(x[peak], color="0.5", lw=0.8, ls="--")
        if "momentum" in steps and steps["momentum"].notna().any():
            mom_ax.plot(x, steps["momentum"], color="C1")
            mom_ax.axvline(x[peak], color="0.5", lw=0.8, ls="--")
        else:
            _empty(mom_ax, "momentum not recorded")
        mom_ax.set_ylabel("momentum")
        for ax in (lr_ax, mom_ax):
            ax.set_xlabel("iteration (optimizer step)")
    fig.suptitle(f"{spec['title']}\n{who}", fontsize="medium")
    fig.tight_layout()
    save(fig, outputs, options)


# ------------------------------------------------------------------------------ Figures 3-8: axes


def axis_panels(
    spec: Mapping[str, Any], summary: pd.DataFrame, stages: Mapping[tuple[str, str], Mapping[str, Any]]
) -> dict[tuple[str, str], list[str]]:
    """(task, arch) -> recipes of one axis figure: the stage's candidates when the figure comes from a
    stage (``stages`` maps (task, arch) to the stage file's content), else the listed group."""
    panels = {}
    tasks = sorted(summary["task"].unique())
    for arch in spec["archs"]:
        for task in tasks:
            if spec.get("stage") is not None:
                stage = stages.get((task, arch))
                if stage is None:
                    continue
                panels[(task, arch)] = list(stage["candidates"])
            else:
                panels[(task, arch)] = list(spec["recipes"])
    return panels


def axis_figure(
    spec: Mapping[str, Any],
    means: pd.DataFrame,
    panels: Mapping[tuple[str, str], Sequence[str]],
    options: Mapping[str, Any],
    outputs: Sequence,
) -> None:
    """Figures 4-8: the recipes that differ only in one axis, labelled by their value of it, one panel
    per task (a row per architecture)."""
    _theme(options)
    axis = spec["axis"]
    archs = list(spec["archs"])
    tasks = sorted({t for t, _ in panels}) or ["(none)"]
    fig, axes = _grid(len(archs), len(tasks))
    labels = {r: axis_value(axis, Recipe.parse(r)) for recipes in panels.values() for r in recipes}
    colors = _palette(list(labels.values()))
    for i, arch in enumerate(archs):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            recipes = panels.get((task, arch), [])
            part = means[(means["task"] == task) & (means["arch"] == arch) & means["recipe"].isin(recipes)]
            if part.empty:
                _empty(ax, "no runs")
            for recipe in recipes:
                rows = part[part["recipe"] == recipe]
                if not rows.empty:
                    _line(ax, rows, labels[recipe], colors[labels[recipe]], options["errorbar"])
            _size_axis(ax, part["n"])
            ax.set_title(f"{task} ({arch})")
            ax.set_ylabel(HEADLINE if j == 0 else "")
    _legend(fig, axes, axis)
    fig.suptitle(spec["title"])
    fig.tight_layout()
    save(fig, outputs, options)


def radiomics_lines(summary: pd.DataFrame, means: pd.DataFrame, task: str, archs: Sequence[str]) -> list[tuple]:
    """(label, family, arch, recipe) of Figure 3's lines for one task: every radiomics feature set (its
    'best' model if there is one, else each model) and, per CNN architecture, the best recipe from scratch
    and the best with a source, best = highest mean validation AUC over sizes and seeds."""
    part = summary[summary["task"] == task]
    lines = []
    rad = part[part["family"].fillna("cnn") != "cnn"]
    for arch, g in rad.groupby("arch", sort=True):
        models = ["best"] if (g["recipe"] == "best").any() else sorted(g["recipe"].unique())
        lines += [(f"{arch} ({m})", "radiomics", arch, m) for m in models]
    cnn = part[part["family"].fillna("cnn") == "cnn"]
    for arch in archs:
        g = cnn[cnn["arch"] == arch]
        if g.empty:
            continue
        score = g.groupby("recipe")["select_auc"].mean()
        scratch = [r for r in score.index if r.split("-")[2] == "none"]
        sourced = [r for r in score.index if r.split("-")[2] != "none"]
        for name, group in (("scratch", scratch), ("transfer", sourced)):
            if group:
                best = max(sorted(group), key=lambda r: score[r] if pd.notna(score[r]) else -math.inf)
                lines.append((f"{arch} {name} ({best})", "cnn", arch, best))
    return lines


def radiomics_figure(
    spec: Mapping[str, Any], summary: pd.DataFrame, means: pd.DataFrame, options: Mapping[str, Any], outputs: Sequence
) -> None:
    """Figure 3: CNNs vs the radiomics baseline, one panel per task."""
    _theme(options)
    tasks = sorted(summary["task"].unique()) or ["(none)"]
    fig, axes = _grid(1, len(tasks))
    per_task = {t: radiomics_lines(summary, means, t, spec["archs"]) for t in tasks}
    colors = _palette([lab for lines in per_task.values() for lab, *_ in lines])
    for j, task in enumerate(tasks):
        ax = axes[0][j]
        lines = per_task[task]
        if not any(f == "radiomics" for _, f, _, _ in lines):
            _empty(ax, "no radiomics runs")
        for label, family, arch, recipe in lines:
            rows = means[(means["task"] == task) & (means["arch"] == arch) & (means["recipe"] == recipe)]
            if not rows.empty:
                _line(ax, rows, label, colors[label], options["errorbar"], "--" if family == "radiomics" else "-")
        _size_axis(ax, means.loc[means["task"] == task, "n"])
        ax.set_title(task)
        ax.set_ylabel(HEADLINE if j == 0 else "")
    _legend(fig, axes, "model")
    fig.suptitle(spec["title"])
    fig.tight_layout()
    save(fig, outputs, options)


# -------------------------------------------------------------------------------- learning curves


def learning_curves_figure(
    curves: pd.DataFrame, means: pd.DataFrame, target: float | None, options: Mapping[str, Any], outputs: Sequence
) -> None:
    """Fitted AUC(n) per recipe (lines over the sizes run), seed means (points) and, with a ``target``
    (results.target_auc), the target AUC (dashed), each fit's size needed (ticks) and the fit extended
    (dotted: an extrapolation) to that size where it is within 10x the largest size. Without a target the
    fits are drawn over the sizes run only."""
    _theme(options)
    fits = curves[curves["status"] == "ok"] if len(curves) else curves
    fig, axes, archs, tasks, colors = _arch_task_panels(means, sharex=False)
    for i, arch in enumerate(archs):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            part = means[(means["task"] == task) & (means["arch"] == arch)]
            sizes = sorted(part["n"].unique())
            for recipe, rows in part.groupby("recipe", sort=True):
                color = colors[str(recipe)]
                ax.plot(rows["n"], rows["mean"], "o", ms=4, color=color)
                fit = fits[(fits["task"] == task) & (fits["arch"] == arch) & (fits["recipe"] == recipe)]
                if fit.empty:
                    continue
                f = fit.iloc[0].to_dict()
                grid = np.geomspace(min(sizes), max(sizes), 100)
                ax.plot(grid, stats.learning_curve(grid, f), "-", color=color, label=str(recipe))
                if target is None:
                    continue
                n_target = float(f["n_target"])
                if math.isfinite(n_target) and max(sizes) < n_target <= 10 * max(sizes):
                    beyond = np.geomspace(max(sizes), n_target, 50)
                    ax.plot(beyond, stats.learning_curve(beyond, f), ":", color=color)
                if math.isfinite(n_target) and min(sizes) <= n_target <= 10 * max(sizes):
                    ax.plot([n_target], [target], "|", ms=12, mew=2, color=color)
            if target is not None:
                ax.axhline(target, color="0.3", lw=0.8, ls="--")
            _size_axis(ax, sizes)
            ax.set_title(f"{task} ({arch})")
            ax.set_ylabel(HEADLINE if j == 0 else "")
    _legend(fig, axes, "recipe")
    fig.suptitle("Learning curves" if target is None else f"Learning curves (target AUC {target})")
    fig.tight_layout()
    save(fig, outputs, options)
