"""Where a study writes: Snakemake's documented layout (smalldl/layout.py). Retrieved and derived data under
resources/, the study's products under results/, logs and benchmarks under logs/, nothing else in the
working directory (the tiny study's run checks the same on disk: tests/workflow/test_tiny_workflow.py)."""

import ast
import re

from smalldl import figures, layout

from ..conftest import ROOT

WRITTEN = ("resources/", "results/", "logs/")


def common_templates():
    """{name: value} of the top-level string constants of rules/common.smk (plain and f-strings), an
    f-string's {NAME} of an earlier constant filled in."""
    found = {}
    for line in (ROOT / "rules" / "common.smk").read_text().splitlines():
        if not re.match(r"[A-Z][A-Z0-9_]* = ", line):
            continue
        try:
            node = ast.parse(line).body[0]
        except SyntaxError:  # the first line of a multi-line value (a dict, a call): not a path
            continue
        name, value = node.targets[0].id, node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found[name] = value.value
        elif isinstance(value, ast.JoinedStr):
            text = ast.unparse(value)[2:-1]  # f"..." -> ...
            found[name] = re.sub(r"\{([A-Z][A-Z0-9_]*)\}", lambda m: found[m.group(1)], text)
    return found


def test_every_path_template_of_the_rules_is_under_resources_results_or_logs():
    templates = common_templates()
    assert {"RAW", "FETCHED", "INDEX", "CACHE", "CACHE_META", "SPLIT", "MANIFEST", "SUBSET", "SOURCE_MODEL",
            "GATE", "LR_FIND", "RUN_DIR", "RUN", "RADIOMICS_FEATURES", "RADIOMICS_RUN"} <= set(templates)  # fmt: skip
    outside = {name: t for name, t in templates.items() if not t.startswith(WRITTEN)}
    assert outside == {}, "path templates outside resources/, results/ and logs/"
    assert figures.STAGE_PATH.startswith("results/") and figures.FIGURE_PATH.startswith("results/")


def test_every_path_a_rule_names_is_under_resources_results_or_logs():
    """The literal paths of rules/*.smk (outputs, logs, benchmarks; ../ is the workflow's own files)."""
    paths = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        paths |= set(re.findall(r'"([a-z_]+/[^"]*)"', smk.read_text()))
    assert paths and {p for p in paths if not p.startswith(WRITTEN)} == set()


def test_the_layout_module_names_the_folders_the_templates_use():
    """smalldl/layout.py (read by the code that finds a study's files outside a rule's inputs) and
    rules/common.smk say the same places."""
    t = common_templates()
    assert layout.TOP_LEVEL == ("resources", "results", "logs", ".snakemake")
    where = {
        layout.RAW: ("RAW", "FETCHED"),
        layout.INDEX: ("INDEX",),
        layout.CACHE: ("CACHE", "CACHE_META"),
        layout.SPLITS: ("SPLIT", "MANIFEST", "SUBSET", "GATE"),
        layout.MODELS: ("SOURCE_MODEL",),
        layout.RUNS: ("LR_FIND", "RUN_DIR", "RUN", "RADIOMICS_RUN"),
        layout.RADIOMICS: ("RADIOMICS_FEATURES",),
    }
    for folder, names in where.items():
        assert folder.split("/", 1)[0] in layout.TOP_LEVEL
        for name in names:
            assert t[name].startswith(folder + "/"), (name, t[name], folder)
