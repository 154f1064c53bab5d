"""The package's shape: no import cycle, no function over 80 lines, no module over 600 lines.

The import graph is read from the source with ``ast``, imports inside functions
included (they run as surely as the ones at the top, only later), so a cycle
cannot hide behind a late import. Imports under ``if TYPE_CHECKING:`` never run
and are left out: they name types, not a dependency at run time.

Product code (outside ``sncli/emulator/``) names no test broker (it says "a broker
that ..." instead) and cites no DESIGN.md, which is not in the repository (it
says the rule itself).

A module over the limit is accepted when its docstring has a sentence starting
"Why this module is long:", a function when its docstring has one starting
"Why this function is long:". ``sncli/emulator/`` (a test double of ServiceNow
and of a schema registry, not the product) is outside the size limits.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "sncli"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 600
LONG_MODULE = "Why this module is long:"
LONG_FUNCTION = "Why this function is long:"

#: Today's offenders in modules being restructured elsewhere (issue 16): shrink this as they are fixed.
#: An entry that is no longer an offender fails the test too, so the list cannot go stale.
PENDING: set[str] = set()


# --------------------------------------------------------------------------- reading the source


def module_name(path: Path, root: Path) -> str:
    """``root/sncli/kafka/admin.py`` -> ``sncli.kafka.admin``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that can run, at any depth (functions, methods, try blocks), but not TYPE_CHECKING ones."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _import_nodes_of(other)
            continue
        yield from _import_nodes_of(child)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _import_nodes(node)


def imported_modules(tree: ast.Module, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` imports (``from pkg import sub`` names ``pkg.sub``)."""
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
            continue
        base = node.module or ""
        if node.level:  # relative: from the package this module is in (or is)
            anchor = name.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            target = sub if sub in known else base
            if target in known:
                found.add(target)
    found.discard(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(path, root): path for path in root.rglob("*.py")}
    known = set(files)
    return {
        name: imported_modules(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
        for name, path in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def size_offenders(source: str, where: str) -> set[str]:
    """``module: <where>`` and ``function: <where>:<qualname>`` for what is too long and does not say why."""
    tree = ast.parse(source)
    found: set[str] = set()
    if len(source.splitlines()) > MAX_MODULE_LINES and LONG_MODULE not in (ast.get_docstring(tree) or ""):
        found.add(f"module: {where}")
    for qualname, node in _functions(tree):
        lines = (node.end_lineno or node.lineno) - node.lineno + 1
        if lines > MAX_FUNCTION_LINES and LONG_FUNCTION not in (ast.get_docstring(node) or ""):
            found.add(f"function: {where}:{qualname}")
    return found


def offenders(root: Path) -> set[str]:
    found = {"cycle: " + ", ".join(component) for component in cycles(import_graph(root))}
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root.parent).as_posix()
        if not where.startswith("sncli/emulator/"):
            text = path.read_text()
            found |= size_offenders(text, where)
            if "tansu" in text.lower():
                found.add(f"names the test broker: {where}")
            if "DESIGN.md" in text:
                found.add(f"cites DESIGN.md: {where}")
    return found


# --------------------------------------------------------------------------- the package


def test_no_import_cycle_and_no_overlong_code_beyond_the_pending_list() -> None:
    assert sorted(offenders(PACKAGE) - PENDING) == []


def test_the_pending_list_names_only_current_offenders() -> None:
    assert sorted(PENDING - offenders(PACKAGE)) == []  # fixed: remove it from PENDING


def test_logs_does_not_depend_on_the_cli() -> None:
    assert not {m for m in import_graph(PACKAGE)["sncli.logs"] if m.startswith("sncli.cli")}


# --------------------------------------------------------------------------- the checker itself


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_import_inside_a_function_closes_a_cycle(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.b import thing\n",
        "b.py": "def thing():\n    from pkg import a\n    return a\n",
        "c.py": "import pkg.a\n",
    })
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.b"]]


def test_type_checking_and_relative_imports(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "sub/__init__.py": "from .x import y\n",
        "sub/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import z\ny = 1\n",
        "sub/z.py": "from ..sub import x\n",
    })
    graph = import_graph(root)
    assert graph["pkg.sub"] == {"pkg.sub.x"}
    assert graph["pkg.sub.x"] == set()  # the TYPE_CHECKING import never runs
    assert graph["pkg.sub.z"] == {"pkg.sub.x"}
    assert cycles(graph) == []


def test_sizes_count_unless_the_docstring_says_why() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    long_fn = f"class K:\n    def run(self):\n{body.replace('    ', '        ')}"
    assert size_offenders(long_fn, "m.py") == {"function: m.py:K.run"}
    excused = f'def run():\n    """Why this function is long: one state machine."""\n{body}'
    assert size_offenders(excused, "m.py") == set()
    module = "x = 1\n" * (MAX_MODULE_LINES + 1)
    assert size_offenders(module, "m.py") == {"module: m.py"}
    assert size_offenders(f'"""Big.\n\n{LONG_MODULE} a generated table."""\n' + module, "m.py") == set()


def test_a_function_at_the_limit_passes() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    assert size_offenders(f"def run():\n{body}", "m.py") == set()  # def line + body = the limit
