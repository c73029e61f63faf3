"""The documentation's structure: the README is a front door (short, the two commands first, the demo
block, links), the manual and the measurements live under docs/, the configuration reference is generated
from the schema, and every relative link points at a file and heading that exist."""

import re
from pathlib import Path

from ..conftest import ROOT, load_script

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _config_reference():
    return load_script("tools/config_reference.py")


def test_the_configuration_reference_is_what_the_schema_gives():
    """Editing schemas/config.schema.yaml without regenerating docs/configuration.md fails here."""
    ref = _config_reference()
    assert (ROOT / "docs" / "configuration.md").read_text() == ref.render(ref.load()), (
        "docs/configuration.md differs from schemas/config.schema.yaml: run python tools/config_reference.py"
    )


def test_the_configuration_reference_lists_every_key_with_its_default_and_description():
    ref = _config_reference()
    schema = {
        "properties": {
            "a": {"type": "object", "default": {}, "properties": {"b": {"enum": ["x", "off"], "default": "off"}}},
            "t": {"$ref": "#/$defs/s"},
        },
        "$defs": {"s": {"type": "object", "properties": {"n": {"type": ["integer", "null"], "description": "N|<m>"}}}},
    }
    text = ref.render(schema)
    assert "| `a.b` | one of `x`, `off` | `off` |  |" in text
    assert "| `t.n` | integer or null |  | N\\|&lt;m> |" in text


def test_the_readme_is_a_front_door():
    """At most 250 lines, none over 400 characters but the generated demo block's, the two commands first."""
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines (at most 250: the manual goes to docs/usage.md)"
    block = set(load_script("tools/demo_record.py").readme_block(text).splitlines())
    long = [i + 1 for i, line in enumerate(lines) if len(line) > 400 and line not in block]
    assert not long, f"README.md lines over 400 characters: {long}"
    first_block = text[text.index("```bash") : text.index("```", text.index("```bash") + 3)]
    assert "pip install -e . && snakemake --cores all" in first_block
    assert 'pip install -e ".[test]" && pytest' in first_block


def test_every_benchmark_script_has_a_row_in_docs_benchmarks():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\| `(benchmarks/[\w.]+\.py)", text, re.M)}
    scripts = {f"benchmarks/{p.name}" for p in (ROOT / "benchmarks").glob("*.py")}
    assert scripts - rows == set(), "benchmarks without a row in docs/benchmarks.md's table"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # a '# comment' in a code block is no heading
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    broken = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken
