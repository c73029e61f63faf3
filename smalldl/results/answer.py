"""The answer to the study's question, per target task and architecture: which recipe to use on this data,
how its test AUC grows with the training size, and how sure we are.

``answer_table`` (run by the compare job, results/answer.csv) holds the comparisons behind it. The choice
uses validation only: the recipe with the highest mean validation AUC (the winner) against every other
recipe run at every size and seed, each difference with an interval over seeds and validation patients
('recommend' rows); a recipe is non-inferior when it is worse than the winner by less than
results.equivalence_margin with confidence (Holm over the recipes of a task and arch). Among the
non-inferior recipes the cheapest is recommended (``recipe_cost``: no source < ImageNet weights < a
source model pretrained on another task; then feature extractor < fine-tune all < gradual unfreezing;
equally cheap: the higher validation AUC). Test AUCs then report the choice (interval over seeds and
test patients); they choose nothing, so the test AUC reported is not inflated by the choice. Per task and
size, the best unit on validation against the next ('best_at_n' rows) is likewise reported on test.
``answer_section`` writes the answer as markdown (the top of results/README.md; ``html_page`` turns it
into results/answer.html for the report) and ``best_per_size`` the headline section's best-per-size line.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import markdown
import numpy as np
import pandas as pd

from smalldl import stats
from smalldl.config import Recipe
from smalldl.errors import InputError
from smalldl.results.comparisons import compare
from smalldl.results.intervals import run_scores
from smalldl.stages import best_candidate
from smalldl.utils import format_number as _num

#: Cost of a recipe's source: no source (scratch), downloadable ImageNet weights, any other source (a
#: source model pretrained on another task: its data and a pretraining run).
SOURCE_COST = {"none": 0, "imagenet": 1}
#: Cost of a transfer method: what is trained and how many settings it has.
TRANSFER_COST = {"extractor": 0, "finetune": 1, "gradual": 2}
SOURCE_WORDS = ("no source", "ImageNet weights", "a pretrained source model")

COLUMNS = [
    "kind", "task", "n", "family_a", "arch_a", "recipe_a", "family_b", "arch_b", "recipe_b", "runs", "seeds",
    "select_a", "select_b", "val_diff", "val_lo", "val_hi", "val_band", "p_ni", "p_ni_holm", "auc_a", "auc_b",
    "diff", "diff_lo", "diff_hi", "band", "p", "p_method", "p_holm", "cost_source_b", "cost_transfer_b", "time_b",
    "not_worse", "recommended",
]  # fmt: skip


def recipe_cost(recipe: str) -> tuple[int, int]:
    """(source cost, transfer cost) of a recipe name; a name that is not a recipe costs the most."""
    try:
        r = Recipe.parse(recipe)
    except InputError:
        return len(SOURCE_WORDS), len(TRANSFER_COST)
    return SOURCE_COST.get(r.source, 2), TRANSFER_COST.get(r.transfer, len(TRANSFER_COST))


def _unit(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("family", "task", "arch", "recipe")}


def _recommend_pairs(summary: pd.DataFrame) -> tuple[list[tuple[Any, ...]], dict[tuple[str, str], dict]]:
    """Per (task, CNN arch): the recipes run at every (n, seed) of that task and arch, the winner on mean
    validation AUC (``best_candidate``: ties to the earlier name) and the pairs (winner, other)."""
    pairs: list[tuple[Any, ...]] = []
    groups: dict[tuple[str, str], dict] = {}
    cnn = summary[summary["family"] == "cnn"]
    for (task, arch), part in cnn.groupby(["task", "arch"], sort=True):
        grid = set(zip(part["n"], part["seed"], strict=True))
        complete = [
            str(r) for r, g in part.groupby("recipe", sort=True) if set(zip(g["n"], g["seed"], strict=True)) == grid
        ]
        scores = {r: float(part.loc[part["recipe"] == r, "select_auc"].astype(float).mean()) for r in complete}
        winner = best_candidate(scores, complete)
        if winner is None:
            continue
        units = {r: _unit(part[part["recipe"] == r].iloc[0]) for r in complete}
        groups[(task, arch)] = {"winner": winner, "recipes": complete}
        pairs += [(units[winner], units[r], "recommend", "all") for r in complete if r != winner]
    return pairs, groups


def _eligible(units: pd.DataFrame) -> pd.Series:
    """Which units (rows with family, arch, recipe) compete for 'best': every CNN recipe and, per radiomics
    feature set, its 'best' model where there is one (a copy of one of the others), else every model."""
    radiomics = units["family"] != "cnn"
    with_best = set(units.loc[radiomics & (units["recipe"] == "best"), "arch"])
    return ~radiomics | ~units["arch"].isin(with_best) | (units["recipe"] == "best")


def _best_at_n_pairs(summary: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Per (task, n): the eligible unit (``_eligible``) with the highest mean *validation* AUC over seeds
    against the next one (ties: the earlier unit in sorted order): picked on validation, compared on test."""
    pairs = []
    for (task, n), part in summary.groupby(["task", "n"], sort=True):
        part = part.assign(_select=pd.to_numeric(part["select_auc"], errors="coerce"))
        means = part.groupby(["family", "arch", "recipe"], sort=True)["_select"].mean().dropna().reset_index()
        means = means[_eligible(means)]
        if len(means) < 2:
            continue
        top = means.sort_values("_select", ascending=False, kind="mergesort").head(2)
        a, b = (
            {"family": r["family"], "task": task, "arch": r["arch"], "recipe": r["recipe"]} for _, r in top.iterrows()
        )
        pairs.append((a, b, "best_at_n", int(n)))
    return pairs


def _val_rows(
    summary: pd.DataFrame,
    groups: Mapping[tuple[str, str], Mapping[str, Any]],
    val_keys: Sequence[str],
    val_reps: np.ndarray,
    level: float,
    margin: float,
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per (task, arch, other recipe): the validation AUC difference winner − other over the (n, seed) runs
    both have (``stats.paired_interval``: seeds and validation patients) and the p-value of non-inferiority
    (H0: the other is worse by the margin or more, one-sided, doubled to be read against 1 − level as the
    interval is), Holm-adjusted over the other recipes of the (task, arch)."""
    index = {k: i for i, k in enumerate(val_keys)}
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    by_unit = {k: g for k, g in summary.groupby(["task", "arch", "recipe"], sort=False)}
    for (task, arch), g in groups.items():
        winner = g["winner"]
        ga = by_unit[(task, arch, winner)].set_index(["n", "seed"])
        found = {}
        for recipe in g["recipes"]:
            if recipe == winner:
                continue
            gb = by_unit[(task, arch, recipe)].set_index(["n", "seed"])
            common = ga.index.intersection(gb.index).sort_values()
            diffs = {}
            for u in common:
                pa, pb = ga.loc[u, "path"], gb.loc[u, "path"]
                if pa not in index or pb not in index:
                    lost = pa if pa not in index else pb
                    raise InputError(f"validation replicates lack run {lost}; rerun rule bootstrap")
                d = float(ga.loc[u, "select_auc"]) - float(gb.loc[u, "select_auc"])
                diffs[u] = (d, val_reps[index[pa]].astype(np.float64) - val_reps[index[pb]].astype(np.float64))
            ci = stats.paired_interval(diffs, level)
            found[recipe] = {
                "val_diff": ci.estimate, "val_lo": ci.lo, "val_hi": ci.hi, "val_band": ci.band, "seeds": ci.runs,
                "p_ni": min(1.0, 2.0 * ci.p_below(margin)) if ci.decidable else math.nan,
            }  # fmt: skip
        adjusted = stats.holm([v["p_ni"] for v in found.values()])
        for (recipe, v), p_adj in zip(found.items(), adjusted, strict=True):
            out[(task, arch, recipe)] = {**v, "p_ni_holm": p_adj}
    return out


def answer_table(
    summary: pd.DataFrame,
    keys: Sequence[str],
    reps: np.ndarray,
    level: float,
    method: str = "bootstrap",
    metric: str = "test_auc_tta",
    loader: Callable[[Mapping[str, Any], str], dict[str, Any]] | None = run_scores,
    *,
    val_keys: Sequence[str] = (),
    val_reps: np.ndarray | None = None,
    margin: float = 0.02,
) -> pd.DataFrame:
    """The comparisons behind the answer (``COLUMNS``).

    'recommend' rows, per (task, CNN arch): a = the recipe with the highest mean validation AUC, b = each
    recipe run at every size and seed there (the winner's own row included). Selection uses validation
    only: ``val_diff`` [``val_lo``, ``val_hi``] is a − b on validation (seeds and validation patients,
    ``val_reps``), and b is ``not_worse`` (non-inferior) when that interval's upper end lies below
    ``margin`` (results.equivalence_margin), read from its Holm-adjusted p-value (``p_ni_holm`` < 1 −
    level); with fewer than ``stats.MIN_RUNS`` seeds nothing is non-inferior but the winner.
    ``recommended``: the cheapest non-inferior recipe (``recipe_cost``; equal cost: the higher validation
    AUC). The test columns (``diff`` = a − b on test, its interval over seeds and test patients, p) report
    the chosen recipes on test; they choose nothing. 'best_at_n' rows: per (task, n) the best unit on mean
    validation AUC against the next, compared on test (Holm-adjusted within the task)."""
    alpha = 1.0 - level
    rec_pairs, groups = _recommend_pairs(summary)
    pairs = rec_pairs + _best_at_n_pairs(summary)
    table = compare(summary, keys, reps, level, method, metric, loader, pairs=pairs)
    table = table.rename(columns={"axis": "kind"})
    by_unit = {k: g for k, g in summary.groupby(["task", "arch", "recipe"], sort=False)}

    def mean_of(task: str, arch: str, recipe: str, col: str, n: Any = None) -> float:
        """Mean of a summary column over a unit's runs (at size n)."""
        g = by_unit[(task, arch, recipe)]
        g = g if n is None else g[g["n"] == n]
        return float(g[col].astype(float).mean()) if col in g and len(g) else math.nan

    own = []
    for (task, arch), g in groups.items():  # the winner against itself: the reference row
        w = g["winner"]
        auc = mean_of(task, arch, w, "headline_auc")
        own.append(
            {"kind": "recommend", "task": task, "n": "all", "family_a": "cnn", "arch_a": arch, "recipe_a": w,
             "family_b": "cnn", "arch_b": arch, "recipe_b": w, "runs": len(by_unit[(task, arch, w)]),
             "auc_a": auc, "auc_b": auc, "diff": 0.0, "diff_lo": 0.0, "diff_hi": 0.0, "val_diff": 0.0,
             "val_lo": 0.0, "val_hi": 0.0}
        )  # fmt: skip
    table = pd.concat([pd.DataFrame(own), table], ignore_index=True) if own else table
    table = table.reindex(columns=COLUMNS)
    val = _val_rows(summary, groups, val_keys, val_reps, level, margin) if val_reps is not None and len(groups) else {}
    table["p_holm"] = np.nan
    for _, part in table[table["kind"] == "recommend"].groupby(["task", "arch_a"]):
        table.loc[part.index, "p_holm"] = stats.holm(part["p"].to_numpy(dtype=float))
    for _, part in table[table["kind"] == "best_at_n"].groupby("task"):
        table.loc[part.index, "p_holm"] = stats.holm(part["p"].to_numpy(dtype=float))
    extra = []
    for r in table.to_dict("records"):
        n = None if r["kind"] == "recommend" else r["n"]
        row = {
            "select_a": mean_of(r["task"], r["arch_a"], r["recipe_a"], "select_auc", n),
            "select_b": mean_of(r["task"], r["arch_b"], r["recipe_b"], "select_auc", n),
        }
        if r["kind"] == "recommend":
            row["cost_source_b"], row["cost_transfer_b"] = recipe_cost(r["recipe_b"])
            row["time_b"] = mean_of(r["task"], r["arch_b"], r["recipe_b"], "wall_time_s")
            v = val.get((r["task"], r["arch_a"], r["recipe_b"]), {})
            row.update(v)
            own_row = r["recipe_a"] == r["recipe_b"]
            row["not_worse"] = bool(own_row or (v.get("p_ni_holm", math.nan) < alpha))
        extra.append(row)
    if extra:
        new = pd.DataFrame(extra, index=table.index)
        table[list(new.columns)] = new
    table["recommended"] = False
    rec = table[(table["kind"] == "recommend") & (table["not_worse"] == True)]  # noqa: E712
    for _, part in rec.groupby(["task", "arch_a"]):
        cheapest = min(  # equal cost: the higher validation AUC (the winner first); then the earlier row
            part.index,
            key=lambda i: (part.at[i, "cost_source_b"], part.at[i, "cost_transfer_b"], _inf(-part.at[i, "select_b"])),
        )
        table.at[cheapest, "recommended"] = True
    return table


def _inf(x: Any) -> float:
    """A number for sorting, NaN as infinity."""
    x = float(x)
    return math.inf if math.isnan(x) else x


# ------------------------------------------------------------------------------------------ markdown


def _p(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def size_needed(x: Any, smallest: Any, largest: Any) -> str:
    """A training size read off a learning curve: never below the smallest size run ('≤ smallest': the
    target is reached there already), 'never' where the fit levels off below the target, '> 100 x the
    largest' beyond that (a number that far out means nothing)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "never"
    if smallest is not None and not (isinstance(smallest, float) and math.isnan(smallest)) and x <= smallest:
        return f"≤ {int(smallest):,}"
    if largest and not (isinstance(largest, float) and math.isnan(largest)) and x > 100 * largest:
        return f"> {100 * largest:,.0f}"
    return f"{x:,.0f}"


def _curve(row: Mapping[str, Any]) -> str:
    a = 1.0 if row["model"] == "ipl2" else row["a"]
    return f"AUC(n) = {a:.3f} − {row['b']:.3g}·n^{-row['c']:.3g} ({row['model']})"


def _rises(row: Mapping[str, Any]) -> bool:
    """Whether a fitted learning curve rises with n (b > 0 and c > 0)."""
    return bool(row["b"] > 0 and row["c"] > 0)


def _interval_words(band: str, seeds: int) -> str:
    if band == "seeds+test":
        return (
            "over training runs and test patients (t over the seeds, plus the test patients' shared "
            "variance; coverage checked by simulation, benchmarks/inference_calibration.py)"
        )
    return (
        f"over the test patients only: with {seeds} seed{'s' if seeds != 1 else ''} per size (fewer than "
        f"{stats.MIN_SEEDS}) the variation between training runs is not in them; run "
        f"{stats.MIN_SEEDS} or more seeds for intervals that include it"
    )


def answer_section(
    summary: pd.DataFrame,
    means: pd.DataFrame,
    rows: pd.DataFrame | None,
    curves: pd.DataFrame,
    settings: Mapping[str, Any],
    sources: pd.DataFrame | None = None,
) -> list[str]:
    """The '## Answer' section: per target task and CNN architecture the recommended recipe and why, its
    test AUC per training size, its learning curve (within the sizes run unless results.target_auc is
    set; extrapolations flagged) and what the intervals cover. ``rows``: answer.csv (``answer_table``);
    ``sources``: source_models.csv, whose models of unverified provenance get a line first."""
    from smalldl.results.sources import unverified

    level = settings["ci"]
    pct = int(round(100 * level))
    target = settings.get("target_auc")
    out = ["## Answer", ""]
    doubtful = unverified(sources)
    if doubtful:
        out += [
            f"**Unverified weights**: source models {', '.join(doubtful)} start from a weights file named in "
            "`sources.<name>.files` (`provenance` in `source_models.csv`): nothing here checks what it was "
            "trained on; if it saw this study's validation or test patients, every result from it is optimistic.",
            "",
        ]
    rec = rows[rows["kind"] == "recommend"] if rows is not None and len(rows) else pd.DataFrame(columns=COLUMNS)
    if rec.empty:
        return [
            *out,
            "No CNN recipe was run at every size and seed of a task: nothing to recommend.",
            "",
            *below_chance_lines(means),
        ]
    margin = settings.get("equivalence_margin", 0.02)
    out += [
        "Which recipe to use on each target, from `answer.csv`. The choice looks at validation only: the "
        "recipe with the highest mean validation AUC (over sizes and seeds) is the winner, and a recipe is "
        f"non-inferior to it when its validation AUC is lower by less than {margin} with {pct}% confidence "
        "(interval over seeds and validation patients, Holm over the recipes compared). The cheapest "
        "non-inferior recipe is recommended: no source < ImageNet weights < a pretrained source model, then "
        "feature extractor < fine-tune all < gradual unfreezing; equally cheap: the higher validation AUC. "
        "Test AUCs then report the recommended recipe and its comparison with the winner (intervals over "
        "seeds and test patients); they do not choose, so the test AUC reported is not inflated by the choice.",
        "",
    ]
    archs_of = rec.groupby("task")["arch_a"].nunique()
    for (task, arch), part in rec.groupby(["task", "arch_a"], sort=True):
        out += _answer_one(task, arch, archs_of[task] > 1, part, summary, means, curves, level, target, margin)
    out += below_chance_lines(means)
    return out


def below_chance(means: pd.DataFrame) -> pd.DataFrame:
    """The rows of seed_means.csv whose interval (over seeds and test patients) lies below 0.5."""
    if means is None or means.empty:
        return pd.DataFrame(columns=getattr(means, "columns", []))
    hi = pd.to_numeric(means["ci_hi"], errors="coerce")
    return means[(means["band"] == stats.BAND_RUNS) & (hi < 0.5)]


def below_chance_warnings(seed_means_csv: str) -> list[str]:
    """The run's closing WARNING lines (the Snakefile's onsuccess) for every recipe and size of
    results/seed_means.csv whose test-AUC interval lies below 0.5; none without the file."""
    try:
        means = pd.read_csv(seed_means_csv)
    except (OSError, pd.errors.EmptyDataError):
        return []
    return [
        f"WARNING: {r['task']} {r['arch']} {r['recipe']} n={int(r['n'])}: test AUC {_num(r['mean'])} "
        f"[{_num(r['ci_lo'])}, {_num(r['ci_hi'])}] lies below chance (0.5); see results/README.md"
        for r in below_chance(means).to_dict("records")
    ]


def below_chance_lines(means: pd.DataFrame) -> list[str]:
    """A warning for every recipe and size whose test AUC lies below chance with confidence: a model that
    ranks unseen patients the wrong way round points to a bug or a property of the data (e.g. a finding
    whose side the flips of the augmentation confuse), not to a weak model."""
    rows = below_chance(means)
    if rows.empty:
        return []
    out = [
        "**Warning: below chance.** These test AUCs lie below 0.5 with confidence (interval over seeds and "
        "test patients): the models rank unseen patients the wrong way round, which a weak model does not "
        "do. Check the labels and the evaluation before using them (docs/usage.md, 'Below-chance results').",
        "",
    ]
    for r in rows.to_dict("records"):
        out.append(
            f"- {r['task']} ({r['arch']}) `{r['recipe']}` at n = {int(r['n'])}: {_num(r['mean'])} "
            f"[{_num(r['ci_lo'])}, {_num(r['ci_hi'])}]."
        )
    return [*out, ""]


def _answer_one(
    task: str,
    arch: str,
    several_archs: bool,
    part: pd.DataFrame,
    summary: pd.DataFrame,
    means: pd.DataFrame,
    curves: pd.DataFrame,
    level: float,
    target: float | None,
    margin: float = 0.02,
) -> list[str]:
    pct = int(round(100 * level))
    alpha = 1.0 - level
    winner = part["recipe_a"].iloc[0]
    others = part[part["recipe_b"] != winner].sort_values("select_b", ascending=False, kind="mergesort")
    chosen = part[part["recommended"] == True]  # noqa: E712
    recommended = chosen["recipe_b"].iloc[0] if len(chosen) else winner
    runs = summary[(summary["task"] == task) & (summary["arch"] == arch) & (summary["family"] == "cnn")]
    incomplete = sorted(set(runs["recipe"]) - set(part["recipe_b"]))
    out = [f"### {task} ({arch})" if several_archs else f"### {task}", ""]
    mine = means[(means["task"] == task) & (means["arch"] == arch) & (means["recipe"] == recommended)]
    mine = mine.sort_values("n")
    last = mine.iloc[-1] if len(mine) else None
    headline = f"**Use `{recommended}`**"
    if last is not None:
        headline += (
            f": test AUC {_num(last['mean'])} [{_num(last['ci_lo'])}, {_num(last['ci_hi'])}] at n = "
            f"{int(last['n'])}, the largest size run."
        )
    out += [headline, ""]
    if last is not None and last["ci_lo"] <= 0.5:
        out.append(
            f"- Its interval at n = {int(last['n'])} includes 0.5: at the sizes run this study does not show "
            f"`{recommended}` doing better than chance on this target."
        )
    win_val = part["select_a"].iloc[0]
    out.append(
        f"- Picked on validation: `{winner}` has the highest validation AUC ({_num(win_val)}) of "
        f"{len(part)} recipe{'s' if len(part) != 1 else ''} run at every size and seed"
        + (f" (left out, runs missing: {', '.join(f'`{r}`' for r in incomplete)})" if incomplete else "")
        + "."
    )
    if others.empty:
        out.append("- No other recipe to compare it with.")
    else:
        bands = set(others["val_band"].dropna())
        if bands and bands != {stats.BAND_RUNS}:
            seeds = int(pd.to_numeric(others["seeds"], errors="coerce").min())
            out.append(
                f"- **Too few runs to compare**: {seeds} seed{'s' if seeds != 1 else ''} (fewer than "
                f"{stats.MIN_RUNS}) cannot show how much training runs vary, so no recipe is shown non-inferior "
                f"to `{winner}` and none is recommended instead of it. Run {stats.MIN_RUNS} or more seeds."
            )
        r = others.iloc[0]
        out.append(
            f"- Against the runner-up on validation, `{r['recipe_b']}` ({_num(r['select_b'])}): validation AUC "
            f"difference (winner − runner-up) {_signed(r['val_diff'])} [{_num(r['val_lo'])}, {_num(r['val_hi'])}]"
            f"; on test {_signed(r['diff'])} [{_num(r['diff_lo'])}, {_num(r['diff_hi'])}] over {int(r['runs'])} "
            f"paired runs, p = {_p(r['p_holm'])} (Holm; {pct}% intervals over seeds and patients)."
        )
        tied = part[(part["not_worse"] == True) & (part["recipe_b"] != winner)]  # noqa: E712
        if recommended != winner:
            out.append(
                f"- Non-inferior to `{winner}` on validation (worse by less than {margin}): "
                + ", ".join(f"`{b}`" for b in tied["recipe_b"])
                + f". The cheapest of them is `{recommended}` ({_cost_words(chosen.iloc[0])}): recommended "
                f"instead of `{winner}` ({_cost_words(part[part['recipe_b'] == winner].iloc[0])})."
            )
            pick = chosen.iloc[0]
            out.append(
                f"- On test, `{winner}` − `{recommended}`: {_signed(pick['diff'])} [{_num(pick['diff_lo'])}, "
                f"{_num(pick['diff_hi'])}] (reported, not used to choose)."
            )
        elif len(tied):
            out.append(
                f"- Non-inferior to `{winner}` on validation (worse by less than {margin}): "
                + ", ".join(f"`{b}`" for b in tied["recipe_b"])
                + f"; none is cheaper ({_cost_words(chosen.iloc[0])}), so `{winner}` stays."
            )
        elif bands == {stats.BAND_RUNS}:
            out.append(
                f"- No other recipe is shown non-inferior to `{winner}` on validation (within {margin}): "
                f"`{winner}` stays. Not shown non-inferior is not shown worse: see the differences in `answer.csv`."
            )
        better = others[(others["p_holm"] < alpha) & (others["diff"] < 0)]
        if len(better):
            out.append(
                "- Validation and test disagree: "
                + ", ".join(f"`{b}`" for b in better["recipe_b"])
                + f" {'is' if len(better) == 1 else 'are'} better than `{winner}` on test (Holm p < {alpha:.2g})."
            )
    # how AUC grows with n
    if len(mine):
        points = "; ".join(
            f"n = {int(m['n'])}: {_num(m['mean'])} [{_num(m['ci_lo'])}, {_num(m['ci_hi'])}]"
            for m in mine.to_dict("records")
        )
        out.append(f"- Test AUC of `{recommended}` per training size, mean over seeds [{pct}% CI]: {points}.")
    out += _curve_lines(task, arch, recommended, curves, target)
    # how sure
    if len(mine):
        seeds = int(mine["count"].min())
        band = "seeds+test" if (mine["band"] == "seeds+test").all() else "test"
        rec_runs = runs[runs["recipe"] == recommended]
        images = sorted({int(x) for x in rec_runs["n_test"].dropna()}) if "n_test" in rec_runs else []
        imgs = f"{images[0]:,} test images" if len(images) == 1 else "test images" if not images else (
            f"{images[0]:,}–{images[-1]:,} test images")  # fmt: skip
        out.append(
            f"- How sure: {seeds} seed{'s' if seeds != 1 else ''} per size, {imgs}; the {pct}% intervals "
            f"are {_interval_words(band, seeds)}."
        )
    return [*out, ""]


def _signed(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{float(x):+.3f}"


def _cost_words(row: Mapping[str, Any]) -> str:
    """What a recipe takes ('answer.csv' row b): its source and transfer method, its training time."""
    source = SOURCE_WORDS[min(int(row["cost_source_b"]), len(SOURCE_WORDS) - 1)]
    words = "from scratch" if int(row["cost_source_b"]) == 0 else source
    transfer = {0: "feature extractor", 1: "fine-tune all", 2: "gradual unfreezing"}.get(int(row["cost_transfer_b"]))
    if transfer and int(row["cost_source_b"]) > 0:
        words += f", {transfer}"
    time = row["time_b"]
    if time is not None and not (isinstance(time, float) and math.isnan(time)):
        words += f", {time:,.0f} s of training per run"
    return words


def needed(row: Mapping[str, Any]) -> tuple[str, str]:
    """The training size needed for the target AUC from a learning_curves.csv row, as (cell, what it is).
    A size run whose mean reaches the target is a measurement and wins over the fit ('≤ n', measured);
    otherwise the fit's size with its interval, never below the smallest size run, 'never' where the fit
    levels off below the target or does not rise, flagged when beyond the largest size run."""
    lo, hi = int(row["min_n"]), int(row["max_n"])
    n, reached = float(row["n_target"]), float(row.get("n_reached", math.nan))
    if not math.isnan(reached) and not (math.isfinite(n) and lo < n <= reached):
        first = "the smallest size run" if reached <= lo else "a size run"
        return f"≤ {int(reached):,}", f"measured: {first} (n = {int(reached)}) reaches it"
    bounds = [size_needed(row[k], lo, hi) for k in ("n_target_lo", "n_target_hi")]
    cell = f"{size_needed(n, lo, hi)} [{bounds[0]}, {bounds[1]}]"
    if math.isinf(n):
        asymptote = 1.0 if row["model"] == "ipl2" else row["a"]
        rises = _rises(row)
        return (
            cell,
            f"the fit levels off below it (asymptote {_num(asymptote)})" if rises else "the fit does not rise with n",
        )
    if math.isnan(n):
        return cell, "not read off the fit"
    if n <= lo:
        return cell, f"the fit reaches it by the smallest size run (n = {lo}); the measured mean there falls short"
    if n > hi:
        return (
            cell,
            f"**extrapolated** beyond the largest size run (n = {hi}): a projection of the fit, not a measurement",
        )
    return cell, "read off the fit within the sizes run"


def _curve_lines(task: str, arch: str, recipe: str, curves: pd.DataFrame, target: float | None) -> list[str]:
    """The learning curve of the recommended recipe and, with a target, the training size needed."""
    hit = (
        curves[(curves["task"] == task) & (curves["arch"] == arch) & (curves["recipe"] == recipe)]
        if len(curves)
        else curves
    )
    if hit.empty:
        return []
    c = hit.iloc[0].to_dict()
    if c["status"] != "ok":
        return [f"- No learning curve: {c['status']}."]
    line = (
        f"- Learning curve: {_curve(c)}, fitted on n = {int(c['min_n'])}–{int(c['max_n'])} (rmse {_num(c['rmse'])}); "
        "it describes AUC within the sizes run" + ("" if _rises(c) else ", where it does not rise with n")
    )
    if target is None:
        return [line + "; set `results.target_auc` for the training size needed to reach a target AUC."]
    cell, what = needed(c)
    return [line + ".", f"- Training images needed for test AUC {target}: {cell}; {what}."]


def best_per_size(task: str, part: pd.DataFrame, rows: pd.DataFrame | None, level: float) -> str:
    """'Best per size' of a task's headline table (``part``: its rows of seed_means.csv): per size the unit
    with the highest mean *validation* AUC (radiomics: the 'best' model, ``_eligible``) and its test AUC
    against the next one on validation (the 'best_at_n' rows of answer.csv: paired, over seeds and test
    patients, Holm-adjusted over the task's sizes): "n=50: `A` (arch) 0.710 vs `B` (arch) 0.700 on test
    (not significant, p = 0.400)". Chosen on validation, so the test AUC shown is not the maximum of noisy
    test means."""
    alpha = 1.0 - level
    pairs = rows[(rows["kind"] == "best_at_n") & (rows["task"] == task)] if rows is not None and len(rows) else None
    units = part[_eligible(part)] if len(part) else part
    cells = []
    for n, at_n in units.groupby("n", sort=True):
        hit = pairs[pairs["n"].astype(str) == str(int(n))] if pairs is not None else pd.DataFrame()
        if hit.empty:  # no paired comparison (one unit, or no runs in common): the best on validation alone
            sel = pd.to_numeric(at_n["select_mean"], errors="coerce") if "select_mean" in at_n else None
            b = at_n.loc[sel.idxmax()] if sel is not None and sel.notna().any() else None
            if b is not None:
                cells.append(f"n={int(n)}: `{b['recipe']}` ({b['arch']}) {_num(b['mean'])}")
            continue
        h = hit.iloc[0]
        best = f"n={int(n)}: `{h['recipe_a']}` ({h['arch_a']}) {_num(h['auc_a'])}"
        other = f"`{h['recipe_b']}` ({h['arch_b']}) {_num(h['auc_b'])}"
        if pd.isna(h["p_holm"]):
            cells.append(f"{best} vs {other} (too few runs to test)")
        elif h["p_holm"] < alpha:
            word = "higher" if h["diff"] > 0 else "lower, validation and test disagree"
            cells.append(f"{best} vs {other} ({word} on test, p = {_p(h['p_holm'])})")
        else:
            cells.append(f"{best} vs {other} (not significant on test, p = {_p(h['p_holm'])})")
    return "Best per size (picked on validation, test AUC shown): " + "; ".join(cells) + "."


# ---------------------------------------------------------------------------------------------- html


def html_page(lines: Sequence[str], title: str) -> str:
    """A standalone HTML page of markdown lines as ``answer_section`` writes them (headings, paragraphs,
    '- ' lists, '|' tables, `code` and **bold**), for the HTML report: converted by Python-Markdown with
    its tables extension."""
    body = markdown.markdown(_blocks(lines), extensions=["tables"], output_format="html")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:1em auto;line-height:1.4}"
        "code{background:#f3f3f3;padding:0 .2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .5em}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + body + "\n</body></html>\n"
    )


def _blocks(lines: Sequence[str]) -> str:
    """The lines as one markdown text, a blank line where a heading, list or table meets other text:
    ``answer_section`` starts a list or table right under a paragraph, which Markdown would read as part
    of the paragraph."""
    out: list[str] = []
    for line in lines:
        if out and out[-1].strip() and line.strip() and _kind(out[-1]) != _kind(line):
            out.append("")
        out.append(line)
    return "\n".join(out)


def _kind(line: str) -> str:
    return "#" if line.startswith("#") else "-" if line.startswith("- ") else "|" if line.startswith("|") else ""
