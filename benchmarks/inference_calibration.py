"""Calibration of the results' inference by simulation with known truth (issue 25, "Sound inference").

Simulates whole studies and runs them through the project's own functions: ``intervals.bootstrap`` and
``intervals.val_bootstrap`` (a loader injected in place of the predictions files, test and validation
images resampled by patient), ``intervals.seed_means``, ``comparisons.compare``, ``findings.test_pvalues``
/ ``findings.decide`` (and ``findings.findings``, Holm over its pooled claims) and ``answer.answer_table``;
then prints how often the intervals cover the truth and how often the verdicts are wrong.

The model (binormal, the truth known in closed form). A study has a test set and a validation set of
patients (150-300 each, 1-3 images per patient, one label per patient, prevalence 0.3-0.5) and a latent
effect z per patient, shared by every run's scores. Each recipe runs at 3 training sizes x 5 seeds; run r
scores image i of patient j as

    s_ri = (mu_recipe,n + u_r) y_i + rho z_j + sqrt(1 - rho^2) e_ri,    u_r ~ N(0, tau^2),

u_r the run-to-run variation (runs of two recipes at the same (n, seed) share half its variance: the same
training draw; a seed's sizes share half of that: its nested subsets). The run's population AUC is
Phi((mu + u) / sqrt 2), so the expected AUC of a recipe at a size is Phi(mu / sqrt(2 + tau^2)) exactly: mu
is set from the wanted expected AUC, and a true difference of recipes is a difference of those (averaged
over the sizes for the pooled difference). tau = sd / (phi(Phi^-1(0.75)) / sqrt 2): a run-to-run AUC sd of
``sd`` near AUC 0.75.

Recipes (expected AUC relative to REF at every size): REF onecycle-finetune-imagenet-transfer; EQUAL
onecycle-extractor-imagenet-transfer (+0, cheaper); BOUNDARY regular-finetune-imagenet-transfer (+margin:
the claim "onecycle >= regular" sits exactly on its non-inferiority boundary); BETTER
onecycle-gradual-imagenet-transfer (+0.05); WORSE onecycle-finetune-none-default (-0.03, cheaper).

    python benchmarks/inference_calibration.py [--studies 200] [--seed 0] [--quick] [--check]

``--check`` exits 1 when a target is missed (the targets are options, e.g. ``--min-coverage``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smalldl import stats  # noqa: E402
from smalldl.results import answer, comparisons, findings, intervals  # noqa: E402

TASK, ARCH = "sim", "resnet18"
SIZES = (50, 200, 800)
BASE_AUC = {50: 0.70, 200: 0.75, 800: 0.80}  # expected AUC of REF per size
SEEDS = 5
RHO = 0.8  # weight of the patient effect shared by all runs (two runs' scores correlate rho^2 given y)
SHARED = 0.5  # share of the run-to-run variance common to two recipes' runs at one (n, seed)
SEED_SHARED = 0.5  # share of that common part common to one seed's sizes (nested training subsets)
SDS = (0.01, 0.03)  # run-to-run AUC sd near AUC 0.75
POWER_DIFF = 0.05
WORSE_DIFF = 0.03

REF = "onecycle-finetune-imagenet-transfer"
EQUAL = "onecycle-extractor-imagenet-transfer"
BOUNDARY = "regular-finetune-imagenet-transfer"
BETTER = "onecycle-gradual-imagenet-transfer"
WORSE = "onecycle-finetune-none-default"

#: what varies in each interval (the 'varies' column; LEGEND says it in words)
WHAT_VARIES_RUNS = "seeds+test"
WHAT_VARIES_TEST = "test only"
WHAT_VARIES_VAL = "seeds+val"
LEGEND = {
    WHAT_VARIES_RUNS: "training runs and test patients: t over the 5 seeds' values plus the test patients' shared "
    "variance (stats.paired_interval / seed_mean_interval)",
    WHAT_VARIES_VAL: "training runs and validation patients: the same on validation (answer's non-inferiority, Holm)",
    WHAT_VARIES_TEST: "test patients only, the trained models fixed: percentile interval of the paired patient "
    "bootstrap (the OLD interval)",
}


def recipe_delta(margin: float) -> dict[str, float]:
    """Expected AUC of each recipe minus REF's (the same at every size)."""
    return {REF: 0.0, EQUAL: 0.0, BOUNDARY: margin, BETTER: POWER_DIFF, WORSE: -WORSE_DIFF}


def tau_for_sd(sd: float) -> float:
    """The sd of u that gives a run-to-run AUC sd of ``sd`` near AUC 0.75 (delta method)."""
    return sd / (sps.norm.pdf(sps.norm.ppf(0.75)) / math.sqrt(2.0))


def mu_for_auc(auc: float, tau: float) -> float:
    """The binormal separation whose expected AUC over u ~ N(0, tau^2) is ``auc``:
    E[Phi((mu + u) / sqrt 2)] = Phi(mu / sqrt(2 + tau^2))."""
    return math.sqrt(2.0 + tau**2) * float(sps.norm.ppf(auc))


# --------------------------------------------------------------------------------------- simulation


@dataclass
class Images:
    """A set of images: ids, labels, patient index and ids, the patients' latent effects."""

    ids: np.ndarray
    y: np.ndarray
    patient: np.ndarray
    patient_ids: np.ndarray
    z: np.ndarray


def draw_images(rng: np.random.Generator, prefix: str) -> Images:
    """150-300 patients, 1-3 images each, one label per patient (prevalence 0.3-0.5)."""
    while True:
        n_pat = int(rng.integers(150, 301))
        prevalence = float(rng.uniform(0.3, 0.5))
        y_pat = (rng.random(n_pat) < prevalence).astype(np.int8)
        if 5 <= y_pat.sum() <= n_pat - 5:
            break
    per = rng.integers(1, 4, size=n_pat)
    patient = np.repeat(np.arange(n_pat), per)
    image = np.concatenate([np.arange(k) for k in per])
    ids = np.array([f"{prefix}{p:04d}_{k}" for p, k in zip(patient, image, strict=True)])
    pids = np.array([f"{prefix}p{p:04d}" for p in range(n_pat)])
    return Images(ids, y_pat[patient], patient, pids, rng.standard_normal(n_pat))


def scores(rng: np.random.Generator, images: Images, separation: float, rho: float = RHO) -> np.ndarray:
    noise = rng.standard_normal(len(images.y))
    return separation * images.y + rho * images.z[images.patient] + math.sqrt(1.0 - rho**2) * noise


@dataclass
class Study:
    summary: pd.DataFrame
    test: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    test_images: Images
    val_images: Images
    patients: dict[str, str]
    truth: dict[tuple[str, int], float]  # (recipe, n) -> expected AUC


def simulate(rng: np.random.Generator, sd: float, margin: float, rho: float = RHO) -> Study:
    """One study: every recipe at every size and seed, scored on one test and one validation set."""
    tau = tau_for_sd(sd)
    test_images, val_images = draw_images(rng, "t"), draw_images(rng, "v")
    deltas = recipe_delta(margin)
    seed_effect = rng.standard_normal(SEEDS)
    rows, test, val, truth = [], {}, {}, {}
    for n in SIZES:
        for s in range(SEEDS):
            draw = math.sqrt(SEED_SHARED) * seed_effect[s] + math.sqrt(1.0 - SEED_SHARED) * rng.standard_normal()
            for recipe, delta in deltas.items():
                auc = BASE_AUC[n] + delta
                truth[(recipe, n)] = auc
                u = tau * (math.sqrt(SHARED) * draw + math.sqrt(1.0 - SHARED) * rng.standard_normal())
                sep = mu_for_auc(auc, tau) + u
                path = f"sim/{recipe}/n{n}/s{s}"
                test[path] = scores(rng, test_images, sep, rho)
                val[path] = scores(rng, val_images, sep, rho)
                rows.append(
                    {
                        "family": "cnn", "task": TASK, "arch": ARCH, "recipe": recipe, "n": n, "seed": s,
                        "headline_auc": auc_of(test[path], test_images.y),
                        "headline_metric": "test_auc_tta", "select_auc": auc_of(val[path], val_images.y),
                        "path": path, "wall_time_s": 100.0, "n_test": len(test_images.y),
                    }
                )  # fmt: skip
    patients = dict(zip(test_images.ids, test_images.patient_ids[test_images.patient], strict=True))
    patients.update(zip(val_images.ids, val_images.patient_ids[val_images.patient], strict=True))
    return Study(pd.DataFrame(rows), test, val, test_images, val_images, patients, truth)


def auc_of(p: np.ndarray, y: np.ndarray) -> float:
    """A run's AUC, by the function the bootstrap checks its headline AUC with."""
    return float(stats.mean_auc_replicates(y[:, None], p[:, None], np.ones((1, len(y))))[0])


def loader_of(preds: Mapping[str, np.ndarray], images: Images) -> Callable[[Mapping[str, Any], str], dict]:
    """A loader for ``intervals`` (in place of ``run_scores`` / ``val_scores``): the simulated scores."""
    y = images.y[:, None]

    def load(row: Mapping[str, Any], metric: str) -> dict[str, Any]:
        return {
            "image_id": images.ids, "y": y, "p": preds[row["path"]][:, None], "labels": ["finding"],
            "scores": "tta", "file": str(row["path"]),
        }  # fmt: skip

    return load


# ----------------------------------------------------------------------------------------- one study


def unit(recipe: str) -> dict[str, str]:
    return {"family": "cnn", "task": TASK, "arch": ARCH, "recipe": recipe}


#: (name, side A, side B, axis): the pooled comparisons the study makes
PAIRS = (("equal", REF, EQUAL, "transfer"), ("boundary", REF, BOUNDARY, "schedule"), ("power", BETTER, REF, "transfer"))


def old_interval(summary: pd.DataFrame, keys: Sequence[str], reps: np.ndarray, a: str, b: str, level: float):
    """The old way: the mean over the paired (n, seed) runs of the runs' paired test-bootstrap replicate
    differences, its percentile interval (the trained models fixed: only the test patients vary)."""
    index = {k: i for i, k in enumerate(keys)}
    ga = summary[summary["recipe"] == a].set_index(["n", "seed"]).sort_index()
    gb = summary[summary["recipe"] == b].set_index(["n", "seed"]).sort_index()
    d = np.mean(
        [reps[index[ga.loc[u, "path"]]].astype(np.float64) - reps[index[gb.loc[u, "path"]]] for u in ga.index], axis=0
    )
    est = float((ga["headline_auc"] - gb["headline_auc"]).mean())
    return (est, *stats.percentile_ci(d, level))


def one_study(rng: np.random.Generator, sd: float, args: argparse.Namespace, global_seed: int) -> dict[str, Any]:
    level, margin, alpha = args.level, args.margin, 1.0 - args.level
    deltas = recipe_delta(margin)
    st = simulate(rng, sd, margin, args.rho)
    summary = st.summary
    test_loader, val_loader = loader_of(st.test, st.test_images), loader_of(st.val, st.val_images)
    out: dict[str, Any] = {}
    with contextlib.redirect_stderr(io.StringIO()):  # the progress lines
        _, reps = intervals.bootstrap(
            summary, args.iterations, level, global_seed, loader=test_loader, patients=st.patients
        )
        keys = list(summary["path"])
        val_keys, val_reps = intervals.val_bootstrap(
            summary, args.iterations, global_seed, loader=val_loader, patients=st.patients
        )
        pairs = [(unit(a), unit(b), axis, "all") for _, a, b, axis in PAIRS]
        cmp = comparisons.compare(summary, keys, reps, level, loader=test_loader, pairs=pairs)
        for (name, a, b, _), row in zip(PAIRS, cmp.to_dict("records"), strict=True):
            assert (row["recipe_a"], row["recipe_b"], str(row["n"])) == (a, b, "all"), row
            truth = deltas[a] - deltas[b]
            ci = findings.comparison_interval(row)
            out[f"{name}_cover"] = bool(ci.lo <= truth <= ci.hi)
            out[f"{name}_band"] = ci.band
            for rel in (">", ">="):
                p_h, p_c = findings.test_pvalues(rel, ci, margin)
                out[f"{name}_{rel}"] = findings.decide(rel, ci.estimate, p_h, p_c, alpha, margin)
            _, lo, hi = old_interval(summary, keys, reps, a, b, level)
            out[f"{name}_old_cover"] = bool(lo <= truth <= hi)
            out[f"{name}_old_decided"] = bool(lo > 0 or hi < 0)
        # the pipeline: findings.findings, Holm over its pooled (confirmatory) claims
        settings = {"ci": level, "equivalence_margin": margin, "target_auc": None}
        table_f = findings.findings(summary, cmp, keys, reps, None, {}, settings, [TASK], [ARCH])
        for claim, name in (("finetune_vs_extractor", "equal"), ("schedule", "boundary")):
            hit = table_f[(table_f["claim"] == claim) & (table_f["n"] == "all")]
            out[f"{name}_pipeline"] = str(hit["verdict"].iloc[0]) if len(hit) else "missing"
        out["holm_family"] = int(table_f["p_holm"].notna().sum())
        ans_bands: list[str] = []
        # the mean AUC over seeds per (recipe, n): stats.mean_interval, and the old test-only interval
        means = intervals.seed_means(summary, keys, reps, level)
        index = {k: i for i, k in enumerate(keys)}
        cover, old_cover = [], []
        for m in means.to_dict("records"):
            truth = st.truth[(m["recipe"], int(m["n"]))]
            cover.append(m["ci_lo"] <= truth <= m["ci_hi"])
            paths = summary[(summary["recipe"] == m["recipe"]) & (summary["n"] == m["n"])]["path"]
            lo, hi = stats.percentile_ci(np.mean(reps[[index[p] for p in paths]].astype(np.float64), axis=0), level)
            old_cover.append(lo <= truth <= hi)
        out["mean_cover"] = float(np.mean(cover))
        out["mean_old_cover"] = float(np.mean(old_cover))
        out["mean_band"] = ",".join(sorted(set(means["band"])))
        # the recommendation between REF and a cheaper recipe (truly worse, or truly equal)
        for name, other in (("worse", WORSE), ("equal", EQUAL)):
            sub = summary[summary["recipe"].isin([REF, other])]
            ans = answer.answer_table(
                sub, keys, reps, level, loader=test_loader, val_keys=val_keys, val_reps=val_reps, margin=margin
            )
            rec = ans[(ans["kind"] == "recommend") & (ans["recommended"] == True)]  # noqa: E712
            out[f"rec_{name}"] = bool(other in set(rec["recipe_b"]))
            ans_bands += [
                str(b) for b in ans.loc[(ans["kind"] == "recommend") & (ans["recipe_b"] != ans["recipe_a"]), "val_band"]
            ]
        out["val_band"] = ",".join(sorted(set(ans_bands)))
    return out


# ------------------------------------------------------------------------------------------- report


@dataclass
class Line:
    section: str
    what: str
    varies: str
    rate: float
    se: float
    target: str = ""
    ok: bool | None = None
    extra: str = ""
    key: str = field(default="")


def rate(values: Sequence[float]) -> tuple[float, float]:
    """Mean and Monte-Carlo standard error over studies (per-study values: a study's units are clustered)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    mean = float(v.mean())
    if np.all((v == 0) | (v == 1)):
        return mean, math.sqrt(mean * (1.0 - mean) / v.size)
    return mean, float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan


def summarise(results: Mapping[float, list[dict[str, Any]]], args: argparse.Namespace) -> list[Line]:
    lines: list[Line] = []
    m = args.margin

    def add(section, what, varies, values, target=None, kind=">=", key="", extra=""):
        r, se = rate(values)
        ok = None
        text = ""
        if target is not None:
            ok = bool(r >= target) if kind == ">=" else bool(r <= target)
            text = f"{kind} {target:.2f}"
        lines.append(Line(section, what, varies, r, se, text, ok, extra, key))

    def family(res):
        return "; Holm over " + "/".join(str(k) for k in sorted({r["holm_family"] for r in res})) + " pooled claims"

    def share(res, key, verdicts):
        return ", ".join(f"{v} {np.mean([r[key] == v for r in res]):.3f}" for v in verdicts)

    for sd, res in results.items():
        t = f"sd {sd:.2f}:"
        runs, test, val = WHAT_VARIES_RUNS, WHAT_VARIES_TEST, WHAT_VARIES_VAL
        cover, err = args.min_coverage, args.max_error
        add("1", f"{t} diff 0, CI of the pooled diff (compare) covers 0", runs,
            [r["equal_cover"] for r in res], cover, ">=", f"coverage_diff_{sd}")  # fmt: skip
        add("1", f"{t} diff 0, '>' decided (test_pvalues+decide)", runs,
            [r["equal_>"] != "inconclusive" for r in res], err, "<=", f"false_gt_{sd}",
            share(res, "equal_>", ("holds", "negligible", "contradicted")))  # fmt: skip
        add("1", f"{t} diff 0, '>' decided (findings.findings, Holm)", runs,
            [r["equal_pipeline"] != "inconclusive" for r in res], err, "<=", f"false_gt_findings_{sd}",
            share(res, "equal_pipeline", ("holds", "negligible", "contradicted")) + family(res))  # fmt: skip
        add("1", f"{t} diff -{m:g}, CI of the pooled diff covers it", runs,
            [r["boundary_cover"] for r in res], cover, ">=", f"coverage_boundary_{sd}")  # fmt: skip
        add("1", f"{t} diff -{m:g}, '>=' decided (test_pvalues+decide)", runs,
            [r["boundary_>="] != "inconclusive" for r in res], err, "<=", f"false_ge_{sd}",
            share(res, "boundary_>=", ("holds", "contradicted")))  # fmt: skip
        add("1", f"{t} diff -{m:g}, '>=' decided (findings.findings, Holm)", runs,
            [r["boundary_pipeline"] != "inconclusive" for r in res], err, "<=", f"false_ge_findings_{sd}",
            share(res, "boundary_pipeline", ("holds", "contradicted")))  # fmt: skip
        add("2", f"{t} diff +{POWER_DIFF:g}, '>' holds (power)", runs, [r["power_>"] == "holds" for r in res],
            extra=f"{share(res, 'power_>', ('negligible', 'inconclusive'))}; "
            f"CI coverage {np.mean([r['power_cover'] for r in res]):.3f}")  # fmt: skip
        add("3", f"{t} cheaper, worse by {WORSE_DIFF:g}: recommended", val,
            [r["rec_worse"] for r in res], args.max_recommend, "<=", f"recommend_worse_{sd}")  # fmt: skip
        add("3", f"{t} cheaper, equal: recommended (sanity)", val, [r["rec_equal"] for r in res])
        add("4", f"{t} mean AUC of 5 seeds (seed_means) covers it", runs,
            [r["mean_cover"] for r in res], cover, ">=", f"coverage_mean_{sd}")  # fmt: skip
        add("5", f"{t} OLD diff 0, CI of the pooled diff covers 0", test, [r["equal_old_cover"] for r in res])
        add("5", f"{t} OLD diff 0, CI excludes 0 (decided)", test, [r["equal_old_decided"] for r in res])
        add("5", f"{t} OLD mean AUC of 5 seeds covers it", test, [r["mean_old_cover"] for r in res])
    return sorted(lines, key=lambda ln: ln.section)


SECTIONS = {
    "1": "1. equal recipes (true difference 0) and the '>=' boundary: coverage and false verdicts",
    "2": "2. a true difference at 5 seeds: power",
    "3": "3. the recommendation (answer.answer_table): non-inferior on validation, then the cheapest",
    "4": "4. the mean AUC over seeds (stats.mean_interval)",
    "5": "5. for contrast, the OLD interval: the test bootstrap alone (stats.percentile_ci)",
}


def bands_seen(results: Mapping[float, list[dict[str, Any]]]) -> str:
    """The bands of every interval the studies got: pooled differences, means, validation differences."""
    seen: dict[str, set[str]] = {"comparisons": set(), "seed_means": set(), "answer (validation)": set()}
    for res in results.values():
        for r in res:
            seen["comparisons"] |= {r[f"{name}_band"] for name, *_ in PAIRS}
            seen["seed_means"] |= set(r["mean_band"].split(","))
            seen["answer (validation)"] |= set(r["val_band"].split(","))
    return "; ".join(f"{k} {', '.join(sorted(v))}" for k, v in seen.items())


def report(lines: Sequence[Line], args: argparse.Namespace, seconds: float, bands: str = "") -> str:
    out = [
        f"inference calibration: {args.studies} studies per run-to-run sd, {SEEDS} seeds x {len(SIZES)} sizes "
        f"{SIZES}, B = {args.iterations} patient-bootstrap replicates, level {args.level}, margin {args.margin}, "
        f"rho {args.rho}, seed {args.seed} ({seconds:.0f} s)",
        "rate ± Monte-Carlo standard error over studies; 'varies': what the interval includes:",
        *(f"  {k:<10} = {v}" for k, v in LEGEND.items()),
    ]
    width = max(len(ln.what) for ln in lines)
    vwidth = max(len(ln.varies) for ln in lines)
    section = None
    for ln in lines:
        if ln.section != section:
            section = ln.section
            out += ["", SECTIONS[section]]
        status = "" if ln.ok is None else "ok" if ln.ok else "MISSED"
        cells = f"  {ln.what:<{width}}  {ln.varies:<{vwidth}}  {ln.rate:6.3f} ± {ln.se:5.3f}"
        cells += f"  {ln.target:<8} {status:<6}"
        if ln.extra:
            cells += f"  ({ln.extra})"
        out.append(cells.rstrip())
    missed = [ln for ln in lines if ln.ok is False]
    out += ["", "bands of the intervals (what they include; all should be seeds+test): " + bands]
    out += [
        "",
        f"targets missed: {len(missed)}" + "".join(f"\n  {ln.key}: {ln.rate:.3f}, target {ln.target}" for ln in missed),
    ]
    return "\n".join(out)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=None, help="studies per run-to-run sd (default 200; quick 25)")
    ap.add_argument("--iterations", type=int, default=None, help="bootstrap replicates (default 200; quick 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="25 studies per sd, B = 100 (the unit test)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--level", type=float, default=0.95)
    ap.add_argument("--margin", type=float, default=0.02, help="results.equivalence_margin")
    ap.add_argument("--rho", type=float, default=RHO, help="weight of the patient effect shared by all runs")
    ap.add_argument("--sds", type=float, nargs="+", default=list(SDS), help="run-to-run AUC sds")
    ap.add_argument("--min-coverage", type=float, default=0.93)
    ap.add_argument("--max-error", type=float, default=0.07, help="false verdict rate per claim")
    ap.add_argument("--max-recommend", type=float, default=0.10, help="a worse recipe recommended")
    args = ap.parse_args(argv)
    if args.studies is None:
        args.studies = 25 if args.quick else 200
    if args.iterations is None:
        args.iterations = 100 if args.quick else 200
    return args


def run(args: argparse.Namespace) -> dict[float, list[dict[str, Any]]]:
    results: dict[float, list[dict[str, Any]]] = {}
    for k, sd in enumerate(args.sds):
        results[sd] = [
            one_study(np.random.default_rng([args.seed, k, i]), sd, args, args.seed * 100_003 + 1_000 * k + i)
            for i in range(args.studies)
        ]
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    start = time.perf_counter()
    results = run(args)
    lines = summarise(results, args)
    print(report(lines, args, time.perf_counter() - start, bands_seen(results)), flush=True)
    if args.check and any(ln.ok is False for ln in lines):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
