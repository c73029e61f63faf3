"""The conda env files pin exactly the versions pyproject.toml pins."""

import re
import tomllib

import yaml

from ..conftest import ROOT


def _pins(specs):
    out = {}
    for spec in specs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", spec.strip())
        assert m, f"not an exact pin: {spec!r}"
        out[m.group(1).lower()] = m.group(2)
    return out


def test_pyproject_pins_everything_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins(project["dependencies"])
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert pins["snakemake"].startswith("9.")
    _pins(project["optional-dependencies"]["test"])
    assert _pins(project["optional-dependencies"]["bench"])["fastai"] == "2.8.12"  # benchmarks/peer_fastai.py


def test_env_files_agree_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins(project["dependencies"] + project["optional-dependencies"]["test"])
    env_files = sorted((ROOT / "envs").glob("*.yaml"))
    assert env_files
    for env in env_files:
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        for name, version in _pins(pip).items():
            assert pins.get(name) == version, f"{env.name}: {name}=={version} but pyproject pins {pins.get(name)}"
        assert "python=3.11" in deps


def test_every_rule_uses_an_env_file_that_exists():
    text = "\n".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    used = set(re.findall(r'"\.\./(envs/[^"]+)"', text))
    assert used and all((ROOT / u).is_file() for u in used)


def test_a_script_job_imports_this_checkouts_library_before_an_installed_one(tmp_path):
    """Snakemake's script preamble puts site-packages (an editable install of another checkout, an older
    release) before the workflow folder: _bootstrap must put this checkout's smalldl first."""
    import subprocess
    import sys

    other = tmp_path / "other"
    (other / "smalldl").mkdir(parents=True)
    (other / "smalldl" / "__init__.py").write_text("")
    code = (
        f"import sys; sys.path.insert(0, {str(other)!r}); sys.path.append({str(ROOT)!r}); "
        f"sys.path.append({str(ROOT / 'workflow_scripts')!r}); import _bootstrap, smalldl; print(smalldl.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(ROOT / "smalldl" / "__init__.py")


def test_every_folder_the_workflow_writes_is_ignored_by_git():
    """A run of the workflow in the checkout leaves `git status` clean: every top-level folder a rule's path
    names (rules/*.smk) is in .gitignore (radiomics/ was not)."""
    tops = set()
    for path in (ROOT / "rules").glob("*.smk"):
        tops |= set(re.findall(r'"([a-z_]+)/[^"]*"', path.read_text()))
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert tops and {t for t in tops if f"/{t}/" not in ignored} == set()


def test_pip_install_puts_the_smalldl_command_beside_the_interpreter():
    """`pip install -e .` installs the console script `smalldl` (pyproject [project.scripts]); its predict
    subcommand answers --help (tests/workflow/test_tiny_workflow.py runs predict on a study)."""
    import subprocess
    import sys
    from pathlib import Path

    command = Path(sys.executable).parent / "smalldl"
    assert command.is_file(), f"no {command}: install with pip install -e ."
    proc = subprocess.run([str(command), "predict", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "MODEL_DIR" in proc.stdout or "model" in proc.stdout.lower()
