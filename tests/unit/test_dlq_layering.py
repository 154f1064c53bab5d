"""The DLQ package sits below the sink: the sink may use it, it never uses the sink (issue 16).

Imports are read with ``ast`` from the source, those inside functions and under
``TYPE_CHECKING`` included: a hidden import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sncli

ROOT = Path(sncli.__file__).parent
#: The record format, signing and the tools' filters: no Kafka, no files, no network.
PURE = ("record.py", "signing.py", "select.py")
IO_MODULES = ("confluent_kafka", "pyarrow", "socket", "requests", "sncli.kafka", "sncli.private_files", "os")


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def dlq_sources() -> list[Path]:
    old = ROOT / "dlq.py"  # the single module this package replaced
    return sorted((ROOT / "dlq").glob("*.py")) + ([old] if old.exists() else [])


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_dlq_package_imports_nothing_from_the_sink_source_or_cli() -> None:
    sources = dlq_sources()
    upward = {
        f"{path.relative_to(ROOT.parent)}: {name}"
        for path in sources
        for name in imports_of(path)
        if any(under(name, package) for package in ("sncli.sink", "sncli.source", "sncli.cli"))
    }
    assert upward == set()
    assert any(path.parent.name == "dlq" for path in sources), "sncli/dlq/ is a package"


def test_the_record_format_signing_and_filters_are_pure() -> None:
    for name in PURE:
        path = ROOT / "dlq" / name
        assert path.exists(), path
        io = {imported for imported in imports_of(path) if any(under(imported, m) for m in IO_MODULES)}
        assert io == set(), f"{name} imports {sorted(io)}"


def test_replay_lives_with_the_sink() -> None:
    replay = ROOT / "sink" / "replay.py"
    assert {"sncli.sink.drain", "sncli.dlq.signing"} <= imports_of(replay)
