"""Import rules: every module has a declared layer, imports point down, no cycles,
importing starts nothing.

The graph counts every import of a raylite module anywhere in a file: at the top,
inside a function (lazy) and under TYPE_CHECKING, since each of those is a
dependency a reader has to follow.
"""

from __future__ import annotations

import ast
import fnmatch
import pathlib
import subprocess
import sys

import raylite

SRC = pathlib.Path(raylite.__file__).parent

# Bottom first. A module may import modules of its own layer or of a lower one; a
# pattern "pkg.*" covers the package's modules, including its __init__ ("pkg").
LAYERS: list[tuple[str, list[str]]] = [
    ("leaves", ["exceptions", "transitions", "config", "core.context", "core.return_modes", "head.storage",
                "node.local", "dashboard", "ray_alias", "job_submission.common"]),
    ("wire", ["codec", "protocol", "protocol_services", "serialization", "metric_values", "scheduling", "labels", "util.scheduling_strategies",
              "bundles", "node.lease_book", "node.bundle_book", "node.store_book", "node.worker_cap", "node.lease_waits",
              "node.memory_policy",
              "runtime_env", "runtime_env.spec", "runtime_env.packaging"]),  # pure books: foundations only
    ("io", ["transport", "transport_lead", "transport_async", "tls", "object_store", "segment_copy", "task_events", "runtime_env.agent",
            "worker_output",
            "experimental.*"]),  # tqdm_ray: the driver's output printer draws its bars
    ("refs", ["object_ref"]),
    # lease_queue, actor_life: pure; they read tasks and ids, actor_life lease_queue's Lease
    ("core", ["core.lease_queue", "core.actor_life", "core.*"]),
    # Ray DAGs: nodes call .remote() on what they were bound from, importing none of it;
    # remote_function and actors import dag to build the nodes (.bind).
    ("dag", ["dag.*"]),
    # __init__ loads the public names on first use (it imports api-layer modules).
    ("api", ["remote_function", "actors", "decorator", "actor", "api", "worker", "__init__", "local_mode", "runtime_context",
             "init_options", "logging_config", "job_config", "node_start", "driver_start",
             "object_ref_generator", "worker_generators", "worker_concurrency", "_raylet",
             "runtime_env.worker_setup"]),
    ("head", ["head.*"]),
    ("node", ["node.*", "dashboard.*"]),
    ("tools", ["cli", "cli_cluster", "cli_jobs", "util.*", "job_submission.*", "__main__"]),
]  # fmt: skip


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(module: str, path: pathlib.Path, node: ast.ImportFrom) -> list[str]:
    """The raylite modules one `from ... import ...` statement reaches."""
    if node.level == 0:
        if not (node.module or "").startswith("raylite"):
            return []
        base = (node.module or "").split(".")[1:]
    else:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        if module == "__init__":
            package = []
        base = package[: len(package) - (node.level - 1)] + (
            node.module.split(".") if node.module else []
        )
    target = ".".join(base) or "__init__"
    found = []
    for alias in node.names:
        sub = f"{target}.{alias.name}" if target != "__init__" else alias.name
        found.append(sub if sub in MODULES else target)
    return found


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.update(_resolve(module, path, node))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "raylite":
                    names.add("__init__")
                elif alias.name.startswith("raylite."):
                    names.add(alias.name.removeprefix("raylite."))
    names.discard(module)
    return names


def _layer(module: str) -> int:
    """A module's layer: where it is named, else where a "pkg.*" pattern covers it."""
    exact = [i for i, (_, patterns) in enumerate(LAYERS) if module in patterns]
    covered = [
        i
        for i, (_, patterns) in enumerate(LAYERS)
        for pattern in patterns
        if pattern.endswith(".*") and (module == pattern[:-2] or fnmatch.fnmatch(module, pattern))
    ]
    found = exact or covered
    assert found, f"{module} is in no layer: add it to LAYERS in {__file__}"
    assert len(set(found)) == 1, f"{module} is in several layers: {found}"
    return found[0]


def test_every_module_has_one_layer():
    for module in MODULES:
        _layer(module)


def test_imports_point_down():
    upward = []
    for module in MODULES:
        for target in _imports(module):
            if target in MODULES and _layer(target) > _layer(module):
                upward.append(
                    f"{module} ({LAYERS[_layer(module)][0]}) imports "
                    f"{target} ({LAYERS[_layer(target)][0]})"
                )
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = {m: {t for t in _imports(m) if t in MODULES} for m in MODULES}
    # A module's package __init__ is imported with it: not a cycle to report.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_graph_sees_imports():
    """The checks above can fail: the graph finds known edges of each import form."""
    assert "object_ref" in _imports("core.core_worker")  # from ..object_ref import
    assert "core.context" in _imports("object_ref")  # a lazy import in a function
    assert "protocol" in _imports("transport")  # from . import protocol as P
    assert "core.core_worker" in _imports("worker")  # from .core.core_worker import


def test_importing_raylite_starts_nothing():
    code = (
        "import threading, atexit, raylite, sys;"
        "print(threading.active_count(), raylite.is_initialized())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]
