"""What reruns when (issue 27), on one finished own-data study (a folder of PNGs and a labels.csv, one
run): a setting that says where or how a job runs reruns nothing; an edited label, an added row, a replaced
image rerun the index and everything downstream; an untouched study reruns nothing.

Every test leaves the study as it found it (bytes and modification times restored), so they share one
finished study (a few dozen seconds of jobs)."""

import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from PIL import Image

from ..conftest import ROOT

pytestmark = pytest.mark.workflow

N_IMAGES = 120

STUDY = {
    "tasks": {
        "nodule": {"dataset": "mine", "type": "binary", "labels": ["nodule"], "val_fraction": 0.2, "test_fraction": 0.2}
    },
    "preprocess": {"width": 32},
    "study": {"archs": ["smallcnn"], "recipes": ["onecycle-finetune-none-default"], "sizes": [20], "seeds": [0]},
    "train": {"epochs": 1, "batch_size": 8, "crop": 28, "tta": 1, "lr_finder": {"enabled": False}},
    "results": {"bootstrap": 100},
    "plots": {"formats": ["png"]},
}

#: Every scheduling key changed at once (smalldl.config.SCHEDULING_KEYS, a dataset's workers and
#: max_pixels, the cache's min_side gate): none may rerun a job.
SCHEDULING = {
    "train": {
        "threads": 2,
        "mem_mb": 5000,
        "runtime": 99,
        "gpu": 1,
        "jobs_per_gpu": 2,
        "device": "cpu",
        "eval_batch_size": 64,
        "checkpoint": False,
    },
    "pretrain": {"threads": 2, "mem_mb": 5000, "runtime": 99, "device": "cpu", "eval_batch_size": 64},
    "datasets": {"mine": {"workers": 2, "max_pixels": 10_000_000}},
    "preprocess": {"min_side": 8},
}


def make_folder(base):
    (base / "scans").mkdir(parents=True)
    rows = []
    for i in range(N_IMAGES):
        rel = f"scans/{i:04d}.png"
        Image.new("L", (40, 40), color=(37 * i) % 256).save(base / rel)
        rows.append({"path": rel, "patient_id": f"P{i // 2:03d}", "nodule": (i // 2) % 2})
    pd.DataFrame(rows).to_csv(base / "labels.csv", index=False)
    return base


def snakemake(study, *args, configs=()):
    work, config = study
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2",
           "--directory", str(work), *args, "--configfile", str(config), *map(str, configs)]  # fmt: skip
    # the jobs import this checkout's library, whatever an installed smalldl is
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, timeout=900, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc.stdout + proc.stderr


def planned(study, configs=()):
    """Rule -> jobs of a dry run ({} when there is nothing to do)."""
    out = snakemake(study, "-n", configs=configs)
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "total"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("reruns")
    folder = make_folder(base / "data")
    config = base / "mine.yaml"
    config.write_text(
        yaml.safe_dump({"datasets": {"mine": {"kind": "folder", "params": {"path": str(folder)}}}, **STUDY})
    )
    work = base / "work"
    work.mkdir()
    snakemake((work, config))
    assert (work / "results" / "summary.csv").is_file()
    return work, config, folder


def _study(study):
    return study[0], study[1]


class Restored:
    """Change a file inside the block; its bytes and times come back after it."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.data, self.stat = self.path.read_bytes(), self.path.stat()
        return self.path

    def __exit__(self, *exc):
        self.path.write_bytes(self.data)
        os.utime(self.path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))


#: What a changed dataset reruns: its index, cache, split and subset, the run and every result.
DOWNSTREAM = ("index", "cache", "split", "subset", "finetune", "aggregate", "bootstrap", "results_readme")


def test_scheduling_and_resource_settings_rerun_nothing(study, tmp_path):
    assert planned(_study(study)) == {}
    extra = tmp_path / "scheduling.yaml"
    extra.write_text(yaml.safe_dump(SCHEDULING))
    assert planned(_study(study), configs=[extra]) == {}


def test_a_result_setting_still_reruns_the_run(study, tmp_path):
    extra = tmp_path / "epochs.yaml"
    extra.write_text(yaml.safe_dump({"train": {"epochs": 2}}))
    jobs = planned(_study(study), configs=[extra])
    assert jobs.get("finetune") == 1 and "index" not in jobs and "cache" not in jobs


def test_a_flipped_label_reruns_the_index_and_everything_downstream(study):
    work, config, folder = study
    with Restored(folder / "labels.csv") as csv:
        table = pd.read_csv(csv)
        table.loc[3, "nodule"] = 1 - table.loc[3, "nodule"]
        table.to_csv(csv, index=False)
        jobs = planned(_study(study))
    assert all(jobs.get(rule) for rule in DOWNSTREAM), jobs


def test_an_appended_row_reruns_the_index_and_everything_downstream(study):
    work, config, folder = study
    new = folder / "scans" / "new.png"
    shutil.copy(folder / "scans" / "0000.png", new)
    try:
        with Restored(folder / "labels.csv") as csv:
            with open(csv, "a") as fh:
                fh.write("scans/new.png,P999,1\n")
            jobs = planned(_study(study))
    finally:
        new.unlink()
    assert all(jobs.get(rule) for rule in DOWNSTREAM), jobs


def test_an_overwritten_image_reruns_the_index_and_everything_downstream(study):
    work, config, folder = study
    with Restored(folder / "scans" / "0005.png") as image:
        Image.new("L", (40, 40), color=0).save(image)
        jobs = planned(_study(study))
    assert all(jobs.get(rule) for rule in DOWNSTREAM), jobs


def test_the_index_job_s_image_manifest_names_the_stale_index_and_its_repair(study):
    """What a public dataset's images rely on (they are not inputs Snakemake stats): the index job's
    resources/index/<dataset>.files.tsv and ``python -m smalldl.data.manifest``, run in the working folder."""
    work, config, folder = study

    def check():
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "smalldl.data.manifest"]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=work, timeout=300, env=env)

    assert (work / "resources" / "index" / "mine.files.tsv").is_file()
    untouched = check()
    assert (untouched.returncode, untouched.stdout) == (0, ""), untouched.stderr
    with Restored(folder / "scans" / "0007.png") as image:
        Image.new("L", (40, 40), color=0).save(image)
        os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
        stale = check()
    assert stale.returncode == 1, stale.stderr
    assert stale.stdout.startswith("resources/index/mine.parquet: 1 image(s) changed since it was built")
    assert "snakemake --forcerun resources/index/mine.parquet" in stale.stdout


def test_the_untouched_study_reruns_nothing_after_the_edits_are_undone(study):
    assert planned(_study(study)) == {}


# ---------------------------------------------------------------- a public dataset's images (a stamp)


@pytest.fixture(scope="module")
def chexpert_copy(tmp_path_factory):
    """A CheXpert look-alike indexed in place and cached (its index and cache jobs only)."""
    from tests.unit.test_sources import make_chexpert

    base = tmp_path_factory.mktemp("public")
    root = make_chexpert(base / "data", n_patients=30)
    config = base / "cx.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "datasets": {"cx": {"kind": "chexpert", "params": {"path": str(root)}}},
                **STUDY,
                "tasks": {"effusion": {"dataset": "cx", "type": "binary", "labels": ["Pleural Effusion"]}},
                "study": {**STUDY["study"], "sizes": [10]},
            }
        )
    )
    work = base / "work"
    work.mkdir()
    snakemake((work, config), "resources/index/cx.parquet", "resources/cache/cx/w32.npy")
    return work, config, root


def test_a_public_dataset_s_replaced_image_reruns_its_index_and_restoring_it_undoes_that(chexpert_copy):
    """CheXpert's, MURA's and ChestX-ray14's images (10^5 files) are not inputs Snakemake keeps: at each DAG
    build the main process compares them with the index job's manifest and sets the index's stamp
    (smalldl.data.manifest.mark). A replaced image reruns the index and the cache, and says which image; the
    restored image reruns nothing again; nothing is kept between the two plans."""
    work, config, root = chexpert_copy
    targets = ("resources/index/cx.parquet", "resources/cache/cx/w32.npy")
    assert "Nothing to be done" in snakemake((work, config), "-n", *targets)
    image = sorted(root.glob("train/*/study1/view1_frontal.jpg"))[3]
    with Restored(image):
        Image.new("L", (40, 48), color=0).save(image, format="JPEG")
        os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
        out = snakemake((work, config), "-n", *targets)
        assert "resources/index/cx.parquet: 1 image(s) changed since it was built (first: " in out
        assert str(image.relative_to(root.parent)) in out or str(image) in out
        jobs = {m.group(1) for m in re.finditer(r"^rule (\w+):", out, re.M)}
        assert {"index", "cache"} <= jobs, out[-3000:]
    assert "Nothing to be done" in snakemake((work, config), "-n", *targets)
