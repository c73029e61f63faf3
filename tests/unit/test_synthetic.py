"""Synthetic data sets: determinism, index contract, label statistics, localized findings, bad arguments."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from smalldl.data.sources import fractal, synthetic_chest, synthetic_limb
from smalldl.data.sources.synthetic_chest import CHRONIC_FINDINGS, DEFAULT_PREVALENCE, FINDINGS

SIZE = 128  # findings tests
SMALL = 48  # file-writing tests


# ---- helpers -------------------------------------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _chest(out: Path, **kw: object) -> pd.DataFrame:
    args: dict[str, object] = dict(n_patients=8, images_per_patient=(1, 3), image_size=SMALL, seed=3)
    args.update(kw)
    return synthetic_chest.generate(out, **args)  # type: ignore[arg-type]


def _limb(out: Path, **kw: object) -> pd.DataFrame:
    args: dict[str, object] = dict(n_patients=8, image_size=SMALL, seed=3)
    args.update(kw)
    return synthetic_limb.generate(out, **args)  # type: ignore[arg-type]


def _fractal(out: Path, **kw: object) -> pd.DataFrame:
    args: dict[str, object] = dict(n_categories=3, images_per_category=4, image_size=SMALL, seed=3)
    args.update(kw)
    return fractal.generate(out, **args)  # type: ignore[arg-type]


GENERATORS = {"chest": _chest, "limb": _limb, "fractal": _fractal}


def _anatomy(k: int) -> synthetic_chest.ChestAnatomy:
    rng = np.random.default_rng(1000 + k)
    return synthetic_chest.draw_anatomy(rng, "M" if k % 2 else "F", 55, patient_seed=k)


def _diff(k: int, finding: str, *, view: str = "PA", difficulty: float = 0.0) -> np.ndarray:
    """Signed difference (with - without) of one finding, everything else fixed."""
    a = _anatomy(k)
    kw = dict(view=view, image_seed=500 + k, image_size=SIZE, difficulty=difficulty)
    base = synthetic_chest.render_chest(a, (), **kw).astype(np.float64)  # type: ignore[arg-type]
    with_f = synthetic_chest.render_chest(a, (finding,), **kw).astype(np.float64)  # type: ignore[arg-type]
    return with_f - base


def _regions(k: int, findings: tuple[str, ...] = (), view: str = "PA") -> dict[str, np.ndarray]:
    return synthetic_chest.chest_regions(_anatomy(k), findings, view=view, image_seed=500 + k, image_size=SIZE)


def _lungs(reg: dict[str, np.ndarray]) -> np.ndarray:
    return (reg["right_lung"] > 0.5) | (reg["left_lung"] > 0.5)


def _fraction(weights: np.ndarray, where: np.ndarray) -> float:
    return float(weights[where].sum() / weights.sum())


# ---- determinism ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, kind: str) -> None:
    gen = GENERATORS[kind]
    t1 = gen(tmp_path / "a")
    t2 = gen(tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    pd.testing.assert_frame_equal(t1, t2)
    gen(tmp_path / "c", seed=4)
    assert _files(tmp_path / "c") != _files(tmp_path / "a")
    first = sorted((tmp_path / "a" / "images").iterdir())[0].name
    assert (tmp_path / "c" / "images" / first).read_bytes() != (tmp_path / "a" / "images" / first).read_bytes()


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_workers_do_not_change_bytes(tmp_path: Path, kind: str) -> None:
    gen = GENERATORS[kind]
    gen(tmp_path / "one", workers=1)
    gen(tmp_path / "two", workers=2)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


# ---- index contract ------------------------------------------------------------------------------------


def _check_index(root: Path, table: pd.DataFrame, columns: list[str], size: int) -> None:
    on_disk = pd.read_csv(root / "index.csv")
    assert list(on_disk.columns) == columns
    assert list(table.columns) == columns
    pd.testing.assert_frame_equal(on_disk, table, check_dtype=False)
    assert table["image_id"].is_unique
    assert set(table["path"]) == {f"images/{i}.png" for i in table["image_id"]}
    assert len(list((root / "images").iterdir())) == len(table)
    for rel in table["path"]:
        with Image.open(root / rel) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (size, size)


def test_chest_index(tmp_path: Path) -> None:
    table = _chest(tmp_path, n_patients=12, images_per_patient=(2, 4))
    columns = ["image_id", "patient_id", "path", "view", "age", "sex", *FINDINGS]
    _check_index(tmp_path, table, columns, SMALL)
    per_patient = table.groupby("patient_id").size()
    assert len(per_patient) == 12 and per_patient.between(2, 4).all() and per_patient.max() > 2
    assert set(table["view"]) <= {"PA", "AP"} and set(table["sex"]) <= {"M", "F"}
    for name in FINDINGS:
        assert set(table[name].unique()) <= {0, 1} and table[name].dtype.kind == "i"
    assert table["patient_id"].str.fullmatch(r"P\d{5}").all()
    assert table["image_id"].str.fullmatch(r"c\d{5}_\d{2}").all()


def test_chest_chronic_findings_constant_within_patient_acute_not() -> None:
    table = synthetic_chest.sample_labels(3000, (2, 5), seed=1)
    groups = table.groupby("patient_id")
    for name in FINDINGS:
        varies = int((groups[name].nunique() > 1).sum())
        if name in CHRONIC_FINDINGS:
            assert varies == 0, name
        elif DEFAULT_PREVALENCE[name] > 0.04:
            assert varies > 0, name
    assert (groups["age"].nunique() == 1).all() and (groups["sex"].nunique() == 1).all()


def test_limb_index_and_study_types(tmp_path: Path) -> None:
    table = _limb(tmp_path, n_patients=10, images_per_study=(1, 3))
    columns = ["image_id", "patient_id", "path", "view", "study_id", "study_type", "abnormal"]
    _check_index(tmp_path, table, columns, SMALL)
    assert (table["view"] == table["study_type"]).all()
    assert table.groupby("patient_id")["study_id"].nunique().eq(1).all()
    assert table.groupby("study_id")["abnormal"].nunique().eq(1).all()
    specs = synthetic_limb.plan(2000, (1, 3), abnormal_rate=0.3, seed=0)
    studies = {s.study_id: s.study for s in specs}
    assert {s.study_type for s in studies.values()} == set(synthetic_limb.STUDY_TYPES)
    rate = np.mean([s.abnormality is not None for s in studies.values()])
    assert abs(rate - 0.3) < 0.04
    kinds = {s.abnormality for s in studies.values()} - {None}
    assert kinds == set(synthetic_limb.ABNORMALITIES)


def test_fractal_index(tmp_path: Path) -> None:
    table = _fractal(tmp_path, n_categories=3, images_per_category=4)
    _check_index(tmp_path, table, ["image_id", "patient_id", "path", "view", "category"], SMALL)
    assert (table["patient_id"] == table["image_id"]).all() and (table["view"] == "fractal").all()
    assert sorted(table["category"].unique()) == [0, 1, 2]
    assert table.groupby("category").size().eq(4).all()


def test_rerun_replaces_stale_index(tmp_path: Path) -> None:
    (tmp_path / "index.csv").write_text("stale\n")
    _fractal(tmp_path, n_categories=1, images_per_category=2)
    assert (tmp_path / "index.csv").read_text().startswith("image_id,")


# ---- labels --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_labels() -> pd.DataFrame:
    return synthetic_chest.sample_labels(20000, (1, 4), seed=7)


def test_label_model_is_calibrated_exactly() -> None:
    model = synthetic_chest.LabelModel()
    for name in FINDINGS:
        assert model.marginals[name] == pytest.approx(DEFAULT_PREVALENCE[name], rel=1e-6, abs=1e-9)
    model = synthetic_chest.LabelModel({"Hernia": 0.3, "Effusion": 0.0})
    assert model.marginals["Hernia"] == pytest.approx(0.3, rel=1e-6)
    assert model.marginals["Effusion"] == 0.0


def test_prevalence_marginals_and_order(big_labels: pd.DataFrame) -> None:
    prev = big_labels[list(FINDINGS)].mean()
    n_patients = big_labels["patient_id"].nunique()
    assert prev.idxmin() == "Hernia" and prev.idxmax() == "Infiltration"
    for name, target in DEFAULT_PREVALENCE.items():
        tol = max(0.2 * target, 4 * math.sqrt(target * (1 - target) / n_patients))
        assert abs(prev[name] - target) <= tol, (name, prev[name], target)


def test_cooccurrence(big_labels: pd.DataFrame) -> None:
    t = big_labels

    def cond(child: str, parent: str) -> float:
        return float(t.loc[t[parent] == 1, child].mean())

    assert cond("Effusion", "Cardiomegaly") > 1.5 * t["Effusion"].mean()
    assert cond("Effusion", "Edema") > 1.5 * t["Effusion"].mean()
    assert cond("Pneumonia", "Consolidation") > 2 * t["Pneumonia"].mean()
    assert cond("Pneumonia", "Infiltration") > 2 * t["Pneumonia"].mean()
    assert cond("Atelectasis", "Effusion") > 1.5 * t["Atelectasis"].mean()
    assert cond("Nodule", "Emphysema") == pytest.approx(t["Nodule"].mean(), abs=0.03)  # unrelated


def test_prevalence_override() -> None:
    t = synthetic_chest.sample_labels(4000, (1, 4), prevalence={"Hernia": 0.25, "Nodule": 0.0}, seed=2)
    assert t["Hernia"].mean() == pytest.approx(0.25, rel=0.12)
    assert t["Nodule"].sum() == 0
    assert t["Mass"].mean() == pytest.approx(DEFAULT_PREVALENCE["Mass"], rel=0.35)


def test_image_count_per_patient_uniform() -> None:
    t = synthetic_chest.sample_labels(3000, (1, 4), seed=5)
    counts = t.groupby("patient_id").size().value_counts(normalize=True).sort_index()
    assert list(counts.index) == [1, 2, 3, 4]
    assert np.allclose(counts.to_numpy(), 0.25, atol=0.04)


# ---- chest findings are localized and plausible --------------------------------------------------------


CASES = range(4)


def test_findings_change_only_their_pixels() -> None:
    for k in CASES:
        for name in FINDINGS:
            d = np.abs(_diff(k, name))
            assert d.max() > 20, name  # visible at difficulty 0
            if name not in ("Emphysema", "Edema", "Fibrosis", "Infiltration", "Atelectasis"):
                assert (d > 2).mean() < 0.2, name  # localized, not a global change


def test_effusion_at_lung_base() -> None:
    for k in CASES:
        reg = _regions(k)
        zone = np.zeros((SIZE, SIZE), bool)
        for key in ("right_lung", "left_lung"):
            lung = reg[key] > 0.5
            rows = np.nonzero(lung.any(axis=1))[0]
            lower = lung.copy()
            lower[: int((rows.min() + rows.max()) / 2)] = False
            zone |= lower
        zone = ndimage.binary_dilation(zone, iterations=3)
        d = np.abs(_diff(k, "Effusion"))
        assert _fraction(d, zone) > 0.9
        assert _diff(k, "Effusion").sum() > 0  # fluid is brighter than air


def _ctr(reg: dict[str, np.ndarray]) -> float:
    lung_cols = np.nonzero(_lungs(reg).any(axis=0))[0]
    heart_cols = np.nonzero((reg["heart"] > 0.5).any(axis=0))[0]
    return (heart_cols.max() - heart_cols.min() + 1) / (lung_cols.max() - lung_cols.min() + 1)


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_cardiomegaly_enlarges_heart_beyond_half_the_chest(view: str) -> None:
    for k in range(6):
        normal = _ctr(_regions(k, (), view))
        big = _ctr(_regions(k, ("Cardiomegaly",), view))
        assert 0.35 < normal < 0.5 < big < 0.75, (k, normal, big)
        d = np.abs(_diff(k, "Cardiomegaly", view=view))
        assert (
            _fraction(d, ndimage.binary_dilation(_regions(k, ("Cardiomegaly",), view)["heart"] > 0.1, iterations=3))
            > 0.7
        )


def test_emphysema_darkens_lungs() -> None:
    for k in CASES:
        lungs = _lungs(_regions(k))
        d = _diff(k, "Emphysema")
        assert d[lungs].mean() < -10
        assert d[lungs].mean() < 3 * d[~lungs].mean()


def test_hernia_retrocardiac_near_midline() -> None:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for k in CASES:
        reg = _regions(k)
        d = np.abs(_diff(k, "Hernia"))
        cx, cy = (d * xx).sum() / d.sum(), (d * yy).sum() / d.sum()
        heart = reg["heart"]
        hy = (heart * yy).sum() / heart.sum()
        assert abs(cx - SIZE / 2) < 0.12 * SIZE
        assert cy > hy - 0.02 * SIZE  # low in the mediastinum
        assert _fraction(d, ndimage.binary_dilation(heart > 0.5, iterations=2)) > 0.9  # behind the heart


def test_nodule_small_mass_larger() -> None:
    for k in CASES:
        nodule = int((np.abs(_diff(k, "Nodule")) > 10).sum())
        mass = int((np.abs(_diff(k, "Mass")) > 10).sum())
        assert 0 < nodule < (0.03 * SIZE) ** 2 * 1.5
        assert mass > 5 * nodule
        assert _diff(k, "Mass").sum() > 0


def test_pneumothorax_darkens_lung_edge() -> None:
    for k in CASES:
        reg = _regions(k)
        edge = np.zeros((SIZE, SIZE), bool)
        for key in ("right_lung", "left_lung"):
            lung = reg[key] > 0.5
            edge |= lung & ~ndimage.binary_erosion(lung, iterations=8)
        edge = ndimage.binary_dilation(edge, iterations=2)
        d = _diff(k, "Pneumothorax")
        assert d.sum() < 0
        assert _fraction(np.clip(-d, 0, None), edge) > 0.8


@pytest.mark.parametrize("name", FINDINGS)
def test_difficulty_makes_findings_subtler_but_present(name: str) -> None:
    for k in (0, 1):
        easy = np.abs(_diff(k, name, difficulty=0.0)).mean()
        hard = np.abs(_diff(k, name, difficulty=1.0)).mean()
        assert 0 < hard < easy, (name, easy, hard)


def test_chronic_finding_same_place_in_every_image_of_patient() -> None:
    a = _anatomy(0)
    spots = []
    for seed in (1, 2):
        kw = dict(image_seed=seed, image_size=SIZE, difficulty=0.0)
        d = np.abs(
            synthetic_chest.render_chest(a, ("Mass",), **kw).astype(float)  # type: ignore[arg-type]
            - synthetic_chest.render_chest(a, (), **kw).astype(float)  # type: ignore[arg-type]
        )
        spots.append(np.argwhere(d > 10).mean(axis=0))
    assert np.abs(spots[0] - spots[1]).max() < 0.1 * SIZE  # same lung region, up to positioning


# ---- limb ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("study_type", synthetic_limb.STUDY_TYPES)
def test_limb_abnormality_on_a_bone(study_type: str) -> None:
    for i, kind in enumerate(synthetic_limb.ABNORMALITIES):
        study = synthetic_limb.LimbStudy(study_type, 70 + i, kind)
        kw = dict(image_seed=i, image_size=SIZE, difficulty=0.5)
        normal = synthetic_limb.render_limb(study, abnormality=False, **kw).astype(float)  # type: ignore[arg-type]
        abnormal = synthetic_limb.render_limb(study, abnormality=True, **kw).astype(float)  # type: ignore[arg-type]
        d = np.abs(abnormal - normal)
        assert d.max() > 10, (study_type, kind)
        assert (d > 2).mean() < 0.1, (study_type, kind)
        bone = synthetic_limb.limb_regions(study, image_seed=i, image_size=SIZE)["bone"] > 0.1
        assert _fraction(d, ndimage.binary_dilation(bone, iterations=3)) > 0.7, (study_type, kind)


def test_limb_study_types_look_different() -> None:
    means = {}
    for t in synthetic_limb.STUDY_TYPES:
        imgs = [
            synthetic_limb.limb_regions(synthetic_limb.LimbStudy(t, s, None), image_seed=s, image_size=64)["bone"]
            for s in range(3)
        ]
        means[t] = np.mean([float((im > 0.1).mean()) for im in imgs])
    assert len({round(v, 3) for v in means.values()}) == len(means)


def _limb_features(img: np.ndarray) -> list[float]:
    """Translation-invariant hand features of a 64 px limb image: metal, dark gaps and holes in bone, dense spots."""
    im = img.astype(np.float32)
    f = [float((im >= 250).mean()), float((im >= 245).mean()), float(im.max())]
    for k in (3, 5, 7):
        closed = ndimage.grey_closing(im, size=(k, k))
        opened = ndimage.grey_opening(im, size=(k + 2, k + 2))
        dark = (closed - im) * (closed > 140)  # dark gaps and holes inside bright bone
        bright = (im - opened) * (opened > 100)  # dense spots on bone or soft tissue
        for a in (dark, bright):
            f += [float(a.max()), *np.percentile(a, (99.5, 98)), float((a > 25).mean()), float((a > 45).mean())]
            lab, n = ndimage.label(a > 30)
            sizes = np.bincount(lab.ravel())[1:] if n else np.zeros(1)
            f += [float(n), float(sizes.max()), float((sizes >= 4).sum())]
    return f


def test_limb_abnormalities_learnable_at_low_resolution() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    specs = synthetic_limb.plan(1000, 1, abnormal_rate=0.5, seed=5)  # one image per patient
    kinds = np.array([str(s.study.abnormality) for s in specs])
    y = np.array([s.abnormal for s in specs])
    types = np.eye(len(synthetic_limb.STUDY_TYPES))[
        [synthetic_limb.STUDY_TYPES.index(s.study.study_type) for s in specs]
    ]
    feats = np.array(
        [
            _limb_features(synthetic_limb.render_limb(s.study, image_seed=s.image_seed, image_size=64, difficulty=0.2))
            for s in specs
        ]
    )
    x = np.hstack([feats, types])
    train = np.arange(len(specs)) % 2 == 0  # split by patient
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0).fit(x[train], y[train])
    p = model.predict_proba(x[~train])[:, 1]
    yt, kt = y[~train], kinds[~train]
    auc = {k: roc_auc_score(yt[(kt == k) | (yt == 0)], p[(kt == k) | (yt == 0)]) for k in synthetic_limb.ABNORMALITIES}
    # hand features are much weaker than a CNN (a ResNet-18 reaches AUC ~0.85 on 128 px images resized to 64)
    assert roc_auc_score(yt, p) > 0.7, auc
    assert auc["hardware"] > 0.95 and auc["lesion"] > 0.65 and auc["fracture"] > 0.58, auc


def test_limb_difficulty_makes_abnormalities_subtler_but_present() -> None:
    for i, kind in enumerate(synthetic_limb.ABNORMALITIES * 2):
        study = synthetic_limb.LimbStudy(synthetic_limb.STUDY_TYPES[(2 * i) % 7], 40 + i, kind)
        changes = []
        for d in (0.0, 1.0):
            kw = dict(image_seed=i, image_size=64, difficulty=d)
            a = synthetic_limb.render_limb(study, abnormality=True, **kw).astype(float)  # type: ignore[arg-type]
            n = synthetic_limb.render_limb(study, abnormality=False, **kw).astype(float)  # type: ignore[arg-type]
            changes.append(np.abs(a - n))
        easy, hard = changes
        assert hard.max() > 10, kind  # still a visible local change at difficulty 1
        assert 0 < hard.sum() < easy.sum(), kind
        # inside the central 80 % of the image, so a 56/64 crop keeps it
        rows, cols = np.nonzero(easy > 10)
        assert rows.min() >= 6 and cols.min() >= 6 and rows.max() < 58 and cols.max() < 58, kind


def test_limb_metal_only_in_hardware_studies() -> None:
    for i in range(28):
        study = synthetic_limb.LimbStudy(synthetic_limb.STUDY_TYPES[i % 7], 200 + i, "hardware")
        kw = dict(image_seed=i, image_size=64, difficulty=0.2)
        normal = synthetic_limb.render_limb(study, abnormality=False, **kw)  # type: ignore[arg-type]
        assert normal.max() < 250  # nothing in a normal image is as bright as metal (marker included)
        for kind in ("fracture", "lesion"):
            assert synthetic_limb.render_limb(study, abnormality=kind, **kw).max() < 250  # type: ignore[arg-type]
        assert (synthetic_limb.render_limb(study, **kw) >= 250).sum() >= 3  # type: ignore[arg-type]


def test_normal_study_renders_without_abnormality() -> None:
    study = synthetic_limb.LimbStudy("XR_HUMERUS", 1, None)
    a = synthetic_limb.render_limb(study, image_seed=3, abnormality=True)
    b = synthetic_limb.render_limb(study, image_seed=3, abnormality=False)
    assert np.array_equal(a, b)


# ---- fractal -------------------------------------------------------------------------------------------


def _flip_invariant_features(img: np.ndarray, cells: int = 16) -> np.ndarray:
    x = img.astype(np.float64)
    x = x + x[::-1] + x[:, ::-1] + x[::-1, ::-1]
    s = x.shape[0] // cells
    x = x.reshape(cells, s, cells, s).mean(axis=(1, 3)).ravel()
    x -= x.mean()
    return x / np.linalg.norm(x)


def test_fractal_instances_resemble_their_category() -> None:
    n_cat, per = 6, 4
    feats = {
        c: [
            _flip_invariant_features(
                fractal.render_fractal(fractal.category_ifs(11, c), image_seed=100 * c + i, image_size=64)
            )
            for i in range(per)
        ]
        for c in range(n_cat)
    }
    within, between = [], []
    for c in range(n_cat):
        w = [a @ b for i, a in enumerate(feats[c]) for b in feats[c][i + 1 :]]
        bt = [a @ b for a in feats[c] for d in range(n_cat) if d != c for b in feats[d]]
        assert np.mean(w) > np.mean(bt), c
        within += w
        between += bt
    assert np.mean(within) > np.mean(between) + 0.15


def test_fractal_categories_distinct_and_deterministic() -> None:
    systems = [fractal.category_ifs(11, c) for c in range(8)]
    assert len({s.maps.tobytes() for s in systems}) == 8
    for s in systems:
        assert 2 <= len(s.maps) <= 8 and s.probs.sum() == pytest.approx(1.0)
        assert np.all(np.linalg.svd(s.maps[:, :4].reshape(-1, 2, 2), compute_uv=False) <= fractal.MAX_SIGMA + 1e-9)
    fractal.category_ifs.cache_clear()
    assert np.array_equal(fractal.category_ifs(11, 3).maps, systems[3].maps)


def test_fractal_filling_rate_check() -> None:
    rng = np.random.default_rng(0)
    for c in range(8):
        ifs = fractal.category_ifs(11, c)
        assert ifs.fill >= fractal.MIN_FILL
        assert fractal.filling_rate(fractal.chaos_points(ifs, rng, 20000)) >= 0.8 * fractal.MIN_FILL
    # a system collapsing onto a line fills almost nothing and would be rejected
    line = fractal.IFS(np.array([[0.5, 0, 0, 0, 0.5, 0], [0.5, 0, 0, 0, -0.5, 0.0]]), np.array([0.5, 0.5]))
    assert fractal.filling_rate(fractal.chaos_points(line, rng, 20000)) < fractal.MIN_FILL
    strict = [fractal.category_ifs(11, c, min_fill=0.25) for c in range(4)]
    assert all(s.fill >= 0.25 for s in strict)
    assert any(not np.array_equal(s.maps, fractal.category_ifs(11, c).maps) for c, s in enumerate(strict))


# ---- bad arguments -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "kwargs", "name"),
    [
        ("chest", {"n_patients": 0}, "n_patients"),
        ("chest", {"difficulty": 1.5}, "difficulty"),
        ("chest", {"difficulty": -0.1}, "difficulty"),
        ("chest", {"prevalence": {"Pneumonitis": 0.1}}, "Pneumonitis"),
        ("chest", {"prevalence": {"Hernia": 1.5}}, "prevalence"),
        ("chest", {"images_per_patient": (3, 1)}, "images_per_patient"),
        ("chest", {"image_size": 8}, "image_size"),
        ("chest", {"workers": 0}, "workers"),
        ("chest", {"seed": -1}, "seed"),
        ("limb", {"n_patients": 0}, "n_patients"),
        ("limb", {"abnormal_rate": 1.2}, "abnormal_rate"),
        ("limb", {"images_per_study": (0, 2)}, "images_per_study"),
        ("limb", {"difficulty": 2}, "difficulty"),
        ("fractal", {"n_categories": 0}, "n_categories"),
        ("fractal", {"images_per_category": 0}, "images_per_category"),
        ("fractal", {"image_size": 10_000}, "image_size"),
    ],
)
def test_bad_arguments(tmp_path: Path, kind: str, kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        GENERATORS[kind](tmp_path / "out", **kwargs)
    assert not (tmp_path / "out" / "index.csv").exists()


def test_bad_finding_names() -> None:
    with pytest.raises(ValueError, match="Pneumonitis"):
        synthetic_chest.render_chest(_anatomy(0), ("Pneumonitis",))
    with pytest.raises(ValueError, match="prevalence"):
        synthetic_chest.sample_labels(10, prevalence={"pneumonia": 0.1})
