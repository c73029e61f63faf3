"""The package's module boundaries: no import cycle among the modules of smalldl.

Every import counts, at the top of a module or inside a function (a function-local import only hides a
cycle), except those under `if TYPE_CHECKING:`, which never run. A string that is exactly a module's name
("smalldl.data.sources.mura" in a table for importlib.import_module) counts as importing it too.
`from pkg import name` is an edge to the module pkg.name when there is one, else to pkg; relative imports
are resolved against the importer's package. Importing a submodule is not counted as importing its parent
packages.
"""

import ast
from pathlib import Path

import smalldl

ROOT = Path(smalldl.__file__).parent


def module_names():
    """{module name: its file} for every module of smalldl (a package by its __init__.py)."""
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(tree):
    """The Import, ImportFrom and string Constant nodes anywhere in tree, skipping the bodies of
    `if TYPE_CHECKING:`."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom) or (
            isinstance(node, ast.Constant) and isinstance(node.value, str)
        ):
            found.append(node)
        if isinstance(node, ast.If) and is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def imported_modules(name, source, modules, is_package=False):
    """The modules among `modules` that module `name` (its text `source`) imports."""
    package = name if is_package else name.rpartition(".")[0]
    targets = set()
    for node in imports_of(ast.parse(source, name)):
        if isinstance(node, ast.Constant):
            targets.add(node.value)
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {t for t in targets if t in modules and t != name}


def import_graph():
    modules = module_names()
    return {
        name: imported_modules(name, path.read_text(), modules, path.name == "__init__.py")
        for name, path in modules.items()
    }


def find_cycle(graph):
    """One import cycle of graph as [a, b, ..., a], or None (a depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_relative_function_local_and_from_package_imports():
    modules = {"p", "p.a", "p.b", "p.c", "p.d", "p.e", "p.q", "p.q.r", "p.q.s"}
    source = """
import p.a
from p import b, not_a_module
from .. import c as see
from ..q import r
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    import p.e
def late():
    from p.d import something
    return importlib.import_module({"x": "p.q"}["x"]), "p.nothing"
"""
    assert imported_modules("p.q.s", source, modules) == {"p", "p.a", "p.b", "p.c", "p.d", "p.q", "p.q.r"}
    assert imported_modules("p.q", "from . import s\nfrom .. import a", modules, is_package=True) == {"p.q.s", "p.a"}
    graph = import_graph()
    assert len(graph) == len(module_names()) > 40
    assert "smalldl.train" in graph["smalldl.jobs.pretrain"]  # a function-local import in the real package


def test_find_cycle_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_smalldl_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
