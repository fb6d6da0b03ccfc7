"""Import rules: exceptions stands alone, imports point down, importing starts nothing."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import raylite

SRC = pathlib.Path(raylite.__file__).parent
# Lower layers must not import the higher ones.
FORBIDDEN = {
    "exceptions": {"*"},
    "protocol": {"core_worker", "api", "node", "worker", "actors", "remote_function"},
    "transport": {"core_worker", "api", "node", "worker", "actors", "remote_function"},
    "object_store": {"core_worker", "api", "node", "worker", "actors", "remote_function"},
    "serialization": {"core_worker", "api", "node", "worker", "actors", "remote_function"},
    "core_worker": {"api", "node", "worker", "actors", "remote_function"},
}


def _raylite_imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("raylite"):
            names.add((node.module or "").split(".")[-1])
    return names


def test_imports_point_down():
    for module, banned in FORBIDDEN.items():
        imported = _raylite_imports(SRC / f"{module}.py")
        if "*" in banned:
            assert not imported, f"{module} imports {imported}"
        else:
            assert not imported & banned, f"{module} imports {imported & banned}"


def test_importing_raylite_starts_nothing():
    code = (
        "import threading, atexit, raylite, sys;"
        "print(threading.active_count(), raylite.is_initialized())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]


def _resolved_imports(path: pathlib.Path) -> set[str]:
    """Every raylite module a file imports, as a full dotted name, TYPE_CHECKING included."""
    package = ["raylite", *path.parent.relative_to(SRC).parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("raylite"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module.startswith("raylite"):
                names.add(module)
                names.update(f"{module}.{a.name}" for a in node.names)
    return names


def test_head_imports_no_node_code():
    # The head reaches its node only through head/node_port.py (NodePort).
    for path in (SRC / "head").glob("*.py"):
        node_code = {
            m
            for m in _resolved_imports(path)
            if m == "raylite.node" or m.startswith("raylite.node.")
        }
        assert not node_code, f"{path.name} imports {node_code}"
