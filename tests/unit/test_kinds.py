"""The registry of dataset kinds (smalldl/data/kinds.py) is the one place that names them: the schema's enum
equals it, no module outside it and the adapters dispatches on a kind's name, and every kind's adapter has
the interface of its raw mode."""

import ast
import importlib
import inspect
import io
import tokenize
from pathlib import Path

import pytest

from smalldl.config import load_schema
from smalldl.data import kinds
from smalldl.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
#: Where kinds may be named: the registry and the adapters (tests are not scanned).
ALLOWED = ("smalldl/data/kinds.py", "smalldl/data/sources/")
#: Where they may not: the library, the rules, the benchmarks, the tools and the job scripts.
SCANNED = ("smalldl", "rules", "benchmarks", "tools", "workflow_scripts", "Snakefile")


def _dataset_schema():
    return load_schema()["properties"]["datasets"]["additionalProperties"]


def test_schema_enum_is_the_registry():
    assert _dataset_schema()["properties"]["kind"]["enum"] == list(kinds.NAMES)


def test_schema_params_blocks_name_registered_kinds():
    consts = [block["if"]["properties"]["kind"]["const"] for block in _dataset_schema().get("allOf", [])]
    assert consts and set(consts) <= set(kinds.NAMES)


def _is_kind(node):
    return isinstance(node, ast.Constant) and node.value in kinds.KINDS


def _kind_literals(node):
    """The kind names a constant, or a tuple / list / set of constants, spells."""
    if _is_kind(node):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [e.value for e in node.elts if _is_kind(e)]
    return []


def python_dispatches(source: str) -> list[tuple[int, str]]:
    """(line, what) for each place a Python source tells kinds apart by name: a comparison with a kind's
    name (or a collection of them), a dict with two or more kinds' names as keys, a tuple / list / set of two
    or more kinds' names."""
    found = []
    compared = set()  # a collection compared with is one place, not two
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            compared |= {id(operand) for operand in (node.left, *node.comparators)}
            names = [n for operand in (node.left, *node.comparators) for n in _kind_literals(operand)]
            if names:
                found.append((node.lineno, f"compares with {', '.join(names)}"))
        elif isinstance(node, ast.Dict):
            names = [k.value for k in node.keys if k is not None and _is_kind(k)]
            if len(names) >= 2:
                found.append((node.lineno, f"dict keyed by {', '.join(names)}"))
        elif isinstance(node, ast.Tuple | ast.List | ast.Set) and id(node) not in compared:
            names = _kind_literals(node)
            if len(names) >= 2:
                found.append((node.lineno, f"collection of {', '.join(names)}"))
    return found


def snakemake_literals(source: str) -> list[tuple[int, str]]:
    """(line, what) for each string literal of a Snakemake file that is a kind's name (the rules name no
    dataset kind at all: they ask the registry)."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.STRING:
            continue
        try:
            value = ast.literal_eval(tok.string)
        except (ValueError, SyntaxError):
            continue  # an f-string
        if value in kinds.KINDS:
            found.append((tok.start[0], f"names {value}"))
    return found


def kind_dispatches(root: Path) -> list[str]:
    """Every place under ``root`` (SCANNED, less ALLOWED) that tells dataset kinds apart by name."""
    paths = []
    for name in SCANNED:
        path = root / name
        paths += [path] if path.is_file() else sorted([*path.rglob("*.py"), *path.rglob("*.smk")])
    found = []
    for path in paths:
        rel = path.relative_to(root).as_posix()
        if rel.startswith(ALLOWED):
            continue
        source = path.read_text()
        hits = python_dispatches(source) if path.suffix == ".py" else snakemake_literals(source)
        found += [f"{rel}:{line}: {what}" for line, what in hits]
    return found


def test_no_module_dispatches_on_a_kind_name():
    assert kind_dispatches(ROOT) == [], "ask smalldl.data.kinds instead"


def test_the_scan_finds_dispatches():
    """The scan sees each style of dispatch the registry replaced."""
    python = """
GENERATORS = {"synthetic_chest": "a", "fractal": "b"}
SYNTHETIC = ("synthetic_chest", "synthetic_limb", "fractal")
if kind == "nih":
    pass
if kind in ("chexpert", "mura"):
    pass
PAPER_SIZES = {"mura": 1, "cxr14": 2}  # a task called mura: one key is no dispatch
"""
    assert [line for line, _ in python_dispatches(python)] == [2, 3, 4, 6]
    smk = 'rule a:\n    params:\n        x=1 if spec["kind"] == "nih" else 2,\n        y=f"{x}",\n'
    assert snakemake_literals(smk) == [(3, "names nih")]


@pytest.mark.parametrize("name", kinds.NAMES)
def test_adapter_has_the_interface_of_its_raw_mode(name):
    kind = kinds.KINDS[name]
    assert kind.name == name and kind.raw in kinds.RAW_MODES and kind.cache_runtime > 0
    assert kind.adapter.startswith("smalldl.data.sources.")
    adapter = importlib.import_module(kind.adapter)
    for function in kinds.INTERFACE[kind.raw]:
        assert callable(getattr(adapter, function, None)), f"{kind.adapter} has no {function}()"
    assert list(inspect.signature(adapter.plan_index).parameters) == ["dataset", "params", "seed"]
    assert list(inspect.signature(adapter.index_files).parameters) == ["dataset", "params"]


def test_every_adapter_module_is_registered():
    modules = {p.stem for p in (ROOT / "smalldl/data/sources").glob("*.py") if not p.stem.startswith("_")}
    assert modules == {k.adapter.rsplit(".", 1)[1] for k in kinds.KINDS.values()}


def test_unknown_kind_names_the_choices():
    with pytest.raises(InputError, match=r"datasets\.x\.kind: unknown kind 'png' \(choose from synthetic_chest"):
        kinds.kind("png", "datasets.x.kind")
    assert not kinds.is_synthetic(None) and not kinds.is_synthetic("nih") and kinds.is_synthetic("fractal")


def test_official_split_and_generated_data():
    folder, nih = kinds.KINDS["folder"], kinds.KINDS["nih"]
    assert nih.has_official_split({}) and not folder.has_official_split({})
    assert folder.has_official_split({"split_column": "split"})
    assert set(kinds.names(synthetic=True)) == set(kinds.names(raw="generate"))
    assert all(kinds.KINDS[n].writes_raw for n in (*kinds.names(raw="generate"), *kinds.names(raw="fetch")))
    assert kinds.official_split_kinds() == "nih, chexpert, mura, or folder with params.split_column"


def test_generated_kinds_plan_without_reading_files(tmp_path):
    """A generator's plan_index is its generate's index (no rendering), and it reads no file."""
    adapter = importlib.import_module(kinds.KINDS["synthetic_limb"].adapter)
    table = adapter.plan_index("limbs", {"n_patients": 3, "images_per_study": [1, 2], "image_size": 32}, 7)
    assert list(table.columns[:4]) == ["image_id", "patient_id", "path", "view"] and len(table) >= 3
    assert adapter.index_files("limbs", {}) == []
    with pytest.raises(InputError, match=r"datasets\.limbs\.params for kind synthetic_limb"):
        adapter.plan_index("limbs", {"n_patients": 0}, 7)
