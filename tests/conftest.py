import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests are about behaviour, and the machines have 2 cores: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def load_script(relative: str):
    """A script of the repository that is not a package module (benchmarks/*.py, tools/*.py), imported by
    path under its file name (registered in sys.modules, as dataclasses and pickling need)."""
    import importlib.util

    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


#: The top-level entries the tiny study's run added to its working directory, recorded as the run ends
#: (before any test writes there): ``request.config.stash[TINY_STUDY_WROTE]``.
TINY_STUDY_WROTE = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory, request):
    """The tiny study (configs/tiny.yaml, --cores 2) run to the end once per session: the workflow tests
    read it and the SLURM test compares its cluster run with it (a tiny run is minutes of CI)."""
    workdir = tmp_path_factory.mktemp("tiny")
    before = set(os.listdir(workdir))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", "--configfile",
           str(ROOT / "configs" / "tiny.yaml"), "--directory", str(workdir)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=1800)
    if proc.returncode != 0:
        raise AssertionError(f"the tiny study failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    request.config.stash[TINY_STUDY_WROTE] = sorted(set(os.listdir(workdir)) - before)
    return workdir


def dry_run(directory, *configfiles, timeout=300):
    """``snakemake -n`` of the workflow in ``directory`` with ``configfiles`` (the whole study over the
    schema's defaults): its stdout and stderr, after checking it succeeded."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--cores", "1",
           "--configfile", *map(str, configfiles), "--directory", str(directory)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=directory, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


#: Every rule of the workflow (the tests check each has its directives, its script and its job function).
RULES = (
    "generate_synthetic",
    "fetch_nih",
    "index",
    "cache",
    "split",
    "subset",
    "study_gate",
    "pretrain",
    "imagenet_weights",
    "lr_find",
    "finetune",
    "select_stage",
    "radiomics_features",
    "radiomics_model",
    "radiomics_best",
    "aggregate",
    "table1",
    "bootstrap",
    "compare",
    "learning_curves",
    "findings",
    "source_models",
    "results_readme",
    "plot_auc_vs_n",
    "plot_history",
    "plot_axis",
    "plot_learning_curves",
    "final_run",
    "final_model",
)
#: The rules the tiny study (configs/tiny.yaml) plans: all but the NIH download (no ChestX-ray14 there)
#: and the lr finder (off).
TINY_RULES = tuple(r for r in RULES if r not in ("fetch_nih", "lr_find"))
