"""Radiomics baselines: hand-crafted features of the preprocessed grey image and tuned classical models.

Two feature sets, computed once per image of a dataset's cache (uint8, the CNNs' input):

``paper79``
    The paper's 79 features. GLCM (scikit-image ``graycomatrix``/``graycoprops``: 256 grey levels,
    symmetric, normalised) at distances 1, 2, 4, 6 and angles 0, 45, 90 degrees with contrast,
    dissimilarity, homogeneity, ASM, energy and correlation (72, named ``glcm_{prop}_d{d}_a{angle}``);
    grey mean, standard deviation and the 2nd to 5th central moments (6, ``grey_*``); the Shannon
    entropy (base 2) of the grey-level histogram (1, ``shannon_entropy``).
``pyradiomics``
    The full pyradiomics set (firstorder, glcm, glrlm, glszm, gldm, ngtdm, shape2D) on the whole image:
    full mask, ``force2D``, the image passed as float32 (uint8 overflows inside SimpleITK and changes
    most features). Columns keep pyradiomics' names (``original_glcm_Contrast``, ...).

Classifiers (one per label, one-vs-rest for multilabel tasks): logistic regression with an L1, L2 or
elastic-net penalty (standardised features) and a random forest, each a scikit-learn Pipeline tuned by
``RandomizedSearchCV`` (ROC AUC, stratified folds) on the training subset only.

Every feature is finite by construction or the image is refused with an InputError naming it, and a
feature table is checked again before a classifier sees it: no NaN reaches a model silently.
"""

from __future__ import annotations

import collections
import logging
import math
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from smalldl.config import RADIOMICS_FEATURESETS as FEATURESETS
from smalldl.config import RADIOMICS_MODELS as MODELS
from smalldl.errors import InputError
from smalldl.utils import Progress, derive_seed

GLCM_DISTANCES = (1, 2, 4, 6)
GLCM_ANGLES = (0, 45, 90)  # degrees; scikit-image: 0 = right neighbour, 90 = the pixel above
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "correlation")
GLCM_LEVELS = 256
MOMENT_NAMES = ("grey_mean", "grey_std", "grey_moment2", "grey_moment3", "grey_moment4", "grey_moment5")
PYRADIOMICS_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape2D")
DEFAULT_SETTINGS: dict[str, Any] = {"bin_width": 25}


# ------------------------------------------------------------------------------------------ features


def paper79_names() -> list[str]:
    glcm = [f"glcm_{p}_d{d}_a{a}" for p in GLCM_PROPS for d in GLCM_DISTANCES for a in GLCM_ANGLES]
    return [*glcm, *MOMENT_NAMES, "shannon_entropy"]


def _grey_image(image: Any, min_side: int, where: str) -> np.ndarray:
    """A writable 2-D uint8 copy of ``image`` (graycomatrix refuses read-only memmaps), or InputError."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise InputError(f"{where}: expected a 2-D grey image, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{where}: the image is empty (shape {arr.shape})")
    if min(arr.shape) < min_side:
        raise InputError(f"{where}: image of {arr.shape[0]}x{arr.shape[1]} pixels is too small (at least {min_side})")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255:
            raise InputError(f"{where}: expected uint8 grey levels 0-255, got {arr.dtype}")
    return np.array(arr, dtype=np.uint8, copy=True)


def paper79(image: Any, where: str = "image") -> np.ndarray:
    """The paper's 79 features of one uint8 grey image, in :func:`paper79_names` order."""
    from skimage.feature import graycomatrix, graycoprops
    from skimage.measure import shannon_entropy

    # the largest offset (distance 6) needs more than 6 pixels in each direction
    img = _grey_image(image, max(GLCM_DISTANCES) + 1, where)
    angles = [math.radians(a) for a in GLCM_ANGLES]
    glcm = graycomatrix(img, GLCM_DISTANCES, angles, levels=GLCM_LEVELS, symmetric=True, normed=False)
    out = np.empty((len(GLCM_PROPS), len(GLCM_DISTANCES), len(GLCM_ANGLES)))
    for d in range(len(GLCM_DISTANCES)):
        for a in range(len(GLCM_ANGLES)):
            # one offset at a time: a 256x256 matrix stays in cache, three times faster than the 4-D call;
            # graycoprops normalises each matrix itself
            one = np.ascontiguousarray(glcm[:, :, d, a])[:, :, None, None]
            for k, prop in enumerate(GLCM_PROPS):
                out[k, d, a] = graycoprops(one, prop)[0, 0]
    x = img.astype(np.float64).ravel()
    mean = x.mean()
    dev = x - mean
    moments = [mean, math.sqrt(np.mean(dev**2))] + [float(np.mean(dev**k)) for k in (2, 3, 4, 5)]
    entropy = float(shannon_entropy(img, base=2))
    return np.concatenate([out.ravel(), moments, [entropy]])


_EXTRACTORS: dict[tuple[Any, ...], Any] = {}


def _pyradiomics_extractor(settings: Mapping[str, Any]) -> Any:
    key = tuple(sorted(settings.items()))
    if key not in _EXTRACTORS:
        import radiomics
        import SimpleITK as sitk
        from radiomics import featureextractor

        # one ITK thread per process: the parallelism is the extraction's worker processes (ITK takes
        # every core by default and would oversubscribe them)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        radiomics.setVerbosity(logging.ERROR)
        logging.getLogger("radiomics").setLevel(logging.ERROR)
        extractor = featureextractor.RadiomicsFeatureExtractor(
            force2D=True, binWidth=settings["bin_width"], additionalInfo=False
        )
        extractor.disableAllFeatures()
        for name in PYRADIOMICS_CLASSES:
            extractor.enableFeatureClassByName(name)
        _EXTRACTORS[key] = extractor
    return _EXTRACTORS[key]


def pyradiomics_features(
    image: Any, settings: Mapping[str, Any] | None = None, where: str = "image"
) -> dict[str, float]:
    """The pyradiomics set of one grey image (whole image as the region), name -> value."""
    import SimpleITK as sitk

    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    img = _grey_image(image, 2, where)
    extractor = _pyradiomics_extractor(settings)
    sitk_img = sitk.GetImageFromArray(img.astype(np.float32))
    mask = sitk.GetImageFromArray(np.ones(img.shape, dtype=np.uint8))
    mask.CopyInformation(sitk_img)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = extractor.execute(sitk_img, mask, label=1)
    except (ValueError, RuntimeError, IndexError) as exc:
        raise InputError(f"{where}: pyradiomics failed ({exc})") from None
    return {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}


def feature_names(featureset: str, settings: Mapping[str, Any] | None = None) -> list[str]:
    check_featureset(featureset)
    if featureset == "paper79":
        return paper79_names()
    probe = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    return list(pyradiomics_features(probe, settings, where="probe"))


def check_featureset(featureset: str) -> None:
    if featureset not in FEATURESETS:
        raise InputError(f"radiomics.featuresets: unknown feature set {featureset!r} (choose from {FEATURESETS})")


def image_features(
    image: Any, featureset: str, settings: Mapping[str, Any] | None = None, where: str = "image"
) -> np.ndarray:
    """One image's feature vector (finite, or InputError naming the image and the features)."""
    if featureset == "paper79":
        values = paper79(image, where)
        names = paper79_names()
    else:
        feats = pyradiomics_features(image, settings, where)
        names, values = list(feats), np.array(list(feats.values()), dtype=np.float64)
    bad = [n for n, v in zip(names, values, strict=True) if not math.isfinite(v)]
    if bad:
        raise InputError(f"{where}: {featureset} feature(s) {', '.join(bad[:5])} are not finite")
    return values


def _chunk(args: tuple[np.ndarray, list[str], str, dict[str, Any]]) -> np.ndarray:
    images, ids, featureset, settings = args
    rows = zip(images, ids, strict=True)
    return np.stack([image_features(img, featureset, settings, where=f"image {iid!r}") for img, iid in rows])


def _ordered_map(executor: Executor, fn: Any, items: Iterable[Any], window: int) -> Iterator[Any]:
    """executor.map in order with at most ``window`` tasks in flight (chunks are read lazily)."""
    pending: collections.deque[Any] = collections.deque()
    try:
        for item in items:
            pending.append(executor.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()


def extract(
    images: np.ndarray,
    image_ids: Sequence[str],
    featureset: str,
    settings: Mapping[str, Any] | None = None,
    workers: int = 1,
    rows: Sequence[int] | np.ndarray | None = None,
    chunk: int | None = None,
    desc: str | None = None,
) -> pd.DataFrame:
    """Features of ``images[rows]`` (all rows by default): image_id + one float column per feature.

    ``images`` may be the cache memmap; chunks are read as they are handed to ``workers`` processes.
    Progress lines go to stderr.
    """
    check_featureset(featureset)
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    ids = [str(image_ids[r]) for r in rows]
    names = feature_names(featureset, settings)
    workers = max(1, int(workers))
    if chunk is None:
        chunk = int(min(32, max(1, math.ceil(len(rows) / (4 * workers)))))
    starts = range(0, len(rows), chunk)
    tasks = ((np.asarray(images[rows[s : s + chunk]]), ids[s : s + chunk], featureset, settings) for s in starts)
    tracker = Progress(len(rows), desc=desc or f"radiomics {featureset}", unit="img")
    blocks: list[np.ndarray] = []
    if workers > 1 and len(rows) > chunk:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for block in _ordered_map(pool, _chunk, tasks, window=2 * workers):
                blocks.append(block)
                tracker.update(len(block))
    else:
        for task in tasks:
            blocks.append(_chunk(task))
            tracker.update(len(blocks[-1]))
    tracker.close()
    values = np.concatenate(blocks) if blocks else np.empty((0, len(names)))
    if values.shape[1] != len(names):
        raise InputError(f"{featureset}: {values.shape[1]} features per image but {len(names)} names")
    table = pd.DataFrame(values, columns=names)
    table.insert(0, "image_id", ids)
    return table


def used_image_ids(
    all_ids: Sequence[str], splits: Iterable[pd.DataFrame], subsets: Iterable[pd.DataFrame]
) -> list[str]:
    """The images some model sees (validation and test images, every training subset), in cache order."""
    used: set[str] = set()
    for split in splits:
        keep = split["selected"].astype(bool) & split["split"].isin(["val", "test"])
        used |= set(split.loc[keep, "image_id"].astype(str))
    for subset in subsets:
        used |= set(subset["image_id"].astype(str))
    missing = used - set(all_ids)
    if missing:
        raise InputError(f"image_id {sorted(missing)[0]!r} is not in the cache; rebuild it")
    return [iid for iid in all_ids if iid in used]


def feature_matrix(features: pd.DataFrame, image_ids: Sequence[str], where: str) -> np.ndarray:
    """Rows of ``features`` for ``image_ids`` as a float matrix; InputError for a missing id or a NaN."""
    if "image_id" not in features.columns:
        raise InputError(f"{where}: no image_id column")
    table = features.set_index(features["image_id"].astype(str)).drop(columns="image_id")
    if table.shape[1] == 0:
        raise InputError(f"{where}: no feature columns")
    missing = [iid for iid in image_ids if iid not in table.index]
    if missing:
        raise InputError(f"{where}: image_id {missing[0]!r} has no features ({len(missing)} missing); rebuild it")
    sub = table.loc[list(image_ids)]
    try:
        x = sub.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: feature columns must be numeric") from None
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputError(
            f"{where}: feature {sub.columns[j]!r} of image_id {sub.index[i]!r} is {x[i, j]} "
            f"({int(bad.sum())} non-finite value(s)); a classifier never gets NaN"
        )
    return x


# ----------------------------------------------------------------------------------------- classifiers


def search_space(model: str, seed: int, rf_trees: int = 100) -> tuple[Any, dict[str, Any]]:
    """The Pipeline of ``model`` and the distributions its random search draws from."""
    from scipy.stats import loguniform, randint, uniform
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    weights = [None, "balanced"]
    if model in ("l1", "l2", "elasticnet"):
        # liblinear: the fastest on a few hundred images (lbfgs is 10-20x slower on these correlated
        # features); saga, the only elastic-net solver, with tol 1e-3 (1e-4 takes thousands of epochs)
        solver, l1_ratio, tol = {
            "l1": ("liblinear", 1.0, 1e-4),
            "l2": ("liblinear", 0.0, 1e-4),
            "elasticnet": ("saga", 0.5, 1e-3),
        }[model]
        clf = LogisticRegression(l1_ratio=l1_ratio, solver=solver, tol=tol, max_iter=5000, random_state=seed)
        space: dict[str, Any] = {"clf__C": loguniform(1e-3, 1e2), "clf__class_weight": weights}
        if model == "elasticnet":
            space["clf__l1_ratio"] = uniform(0.05, 0.9)
        return Pipeline([("scale", StandardScaler()), ("clf", clf)]), space
    if model == "rf":
        clf = RandomForestClassifier(n_estimators=rf_trees, random_state=seed, n_jobs=1)
        space = {
            "clf__max_depth": [None, 3, 5, 8, 12],
            "clf__max_features": ["sqrt", "log2", 0.2, 0.5],
            "clf__min_samples_leaf": randint(1, 11),
            "clf__class_weight": [None, "balanced", "balanced_subsample"],
        }
        return Pipeline([("clf", clf)]), space
    raise InputError(f"radiomics.models: unknown model {model!r} (choose from {', '.join(MODELS)})")


class ConstantModel:
    """Stands in for a label with a single class in its training subset: predicts that class' rate."""

    def __init__(self, p: float) -> None:
        self.p = float(p)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack([np.full(len(x), 1 - self.p), np.full(len(x), self.p)])


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def fit_label(
    x: np.ndarray, y: np.ndarray, model: str, settings: Mapping[str, Any], seed: int, threads: int = 1
) -> tuple[Any, dict[str, Any]]:
    """Tune ``model`` on one binary label by random search + stratified CV (ROC AUC), refit on all of x.

    Fewer positives (or negatives) than folds: as many folds as there are; fewer than 2: the
    default parameters without search; a single class: a constant prediction. Each case is recorded.
    """
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold

    y = np.asarray(y).astype(np.int64)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return ConstantModel(pos / max(1, len(y))), {
            "status": "single_class",
            "best_params": None,
            "cv_auc": None,
            "folds": 0,
            "convergence_warnings": 0,
        }
    pipe, space = search_space(model, seed, settings.get("rf_trees", 100))
    folds = min(int(settings["cv_folds"]), pos, neg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if folds < 2:
            est = clone(pipe).fit(x, y)
            info: dict[str, Any] = {"status": "untuned", "best_params": {}, "cv_auc": None, "folds": folds}
        else:
            search = RandomizedSearchCV(
                pipe,
                space,
                n_iter=int(settings["n_iter"]),
                scoring="roc_auc",
                cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                random_state=seed,
                n_jobs=max(1, int(threads)),
                refit=True,
                error_score="raise",
            )
            search.fit(x, y)
            est = search.best_estimator_
            params = {k.removeprefix("clf__"): _plain(v) for k, v in search.best_params_.items()}
            info = {"status": "tuned", "best_params": params, "cv_auc": float(search.best_score_), "folds": folds}
    n_conv = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    info["convergence_warnings"] = n_conv
    return est, info


def fit_predict(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: Mapping[str, np.ndarray],
    labels: Sequence[str],
    model: str,
    settings: Mapping[str, Any],
    seed: int,
    threads: int = 1,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """One tuned classifier per label (one-vs-rest); probabilities on each of ``x_eval``'s parts."""
    y_train = np.asarray(y_train).reshape(len(y_train), -1)
    probs = {part: np.empty((len(x), len(labels))) for part, x in x_eval.items()}
    infos: dict[str, dict[str, Any]] = {}
    tracker = Progress(len(labels), desc=f"fit {model}", unit="label", every=10.0)
    for j, label in enumerate(labels):
        known = y_train[:, j] >= 0  # uncertain (-1) labels are left out of this label's classifier
        est, info = fit_label(x_train[known], y_train[known, j], model, settings, derive_seed(seed, label), threads)
        if not known.all():
            info["uncertain_masked"] = int((~known).sum())
        for part, x in x_eval.items():
            probs[part][:, j] = est.predict_proba(x)[:, 1] if len(x) else []
        infos[label] = info
        cv = f"{info['cv_auc']:.4f}" if info["cv_auc"] is not None else "-"
        print(f"{label}: {info['status']} ({info['folds']} folds), cv AUC {cv}, {info['best_params']}", file=sys.stderr)
        tracker.update()
    tracker.close()
    return probs, infos


def scores(y: np.ndarray, prob: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Loss (mean binary cross-entropy) and AUC as the CNN runs report them."""
    from smalldl.metrics import auc_per_label, masked_bce, mean_auc

    y = np.asarray(y, dtype=np.float64).reshape(len(prob), -1)
    loss = masked_bce(y, prob) if len(y) else math.nan  # uncertain (-1) labels left out, as for the CNNs
    per = auc_per_label(y, prob, list(labels))
    return {"loss": loss, "auc": mean_auc(per), "per_label": per}


def select_best(candidates: Mapping[str, Mapping[str, Any]]) -> str:
    """The model with the highest validation AUC (an undefined one counts as lowest; ties: first)."""
    if not candidates:
        raise InputError("radiomics best: no model results to choose from")

    def key(item: tuple[int, str]) -> tuple[float, int]:
        i, name = item
        auc = candidates[name].get("val_auc")
        value = float(auc) if auc is not None and math.isfinite(float(auc)) else -math.inf
        return (value, -i)

    return max(enumerate(candidates), key=key)[1]


__all__ = [
    "FEATURESETS",
    "MODELS",
    "paper79",
    "paper79_names",
    "pyradiomics_features",
    "feature_names",
    "image_features",
    "extract",
    "used_image_ids",
    "feature_matrix",
    "search_space",
    "fit_label",
    "fit_predict",
    "scores",
    "select_best",
]
