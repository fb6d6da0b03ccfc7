"""inspect_serializability: find what keeps an object from pickling (Ray's `ray.util`).

Owns the walk that looks for the culprit and the report it prints; not serialization
itself (serialization.py: raylite pickles with cloudpickle, and so does this check).

    inspect_serializability(obj) ──cloudpickle.dumps──▶ ok: (True, set())
          │ fails
          ▼
    a function: its globals and nonlocals; anything else: its functions, then its other
    members (dunders skipped) ── each tried the same way, `depth` levels down ──▶
    (False, {FailureTuple(culprit, path, parent), ...}) and a printed report

The report and the result are Ray 2.60's: a banner "Checking Serializability of
<obj>", one line per member tried ("Serializing 'name' <obj>..."), "!!! FAIL
serialization: <error>" for each failure, and a closing summary naming the
non-serializable variables (colours only when printing to a terminal: Ray
strips them from a piped stdout too). A failure is recorded at the depth where the walk stops;
when no member fails alone, the object itself is named.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from typing import Any

import cloudpickle

_RED, _RESET_FORE, _BRIGHT, _RESET_ALL = "\x1b[31m", "\x1b[39m", "\x1b[1m", "\x1b[0m"
_DOCS = "https://docs.ray.io/en/master/ray-core/objects/serialization.html#troubleshooting"


class FailureTuple:
    """One non-serializable object: what it is, how it was reached, what holds it.

    Attributes:
        obj: the object that does not serialize.
        path: the names walked from the inspected object down to it.
        parent: the object that refers to `obj`.
    """

    def __init__(self, obj: Any, path: tuple[Any, ...], parent: Any) -> None:
        self.obj = obj
        self.path = path
        self.parent = parent

    def __repr__(self) -> str:
        names = [str(p) if p is not None else "unknown" for p in self.path]
        var_name = names[-1] if names else "unknown"
        return (
            f"FailTuple({var_name} [path={' -> '.join(names)}, obj={self.obj}, "
            f"parent={self.parent}])"
        )


class _Printer:
    def __init__(self, print_file: Any) -> None:
        self.level = 0
        self.print_file = print_file
        target = sys.stdout if print_file is None else print_file
        self.colour = bool(getattr(target, "isatty", lambda: False)())

    def red(self, text: str) -> str:
        return f"{_RED}{text}{_RESET_FORE}" if self.colour else text

    def bright(self, text: str) -> str:
        return f"{_BRIGHT}{text}{_RESET_ALL}" if self.colour else text

    @contextlib.contextmanager
    def indent(self) -> Iterator[None]:
        self.level += 1
        try:
            yield
        finally:
            self.level -= 1

    def print(self, msg: str) -> None:
        print("    " * self.level + msg, file=self.print_file)


def inspect_serializability(
    base_obj: Any, name: str | None = None, depth: int = 3, print_file: Any = None
) -> tuple[bool, set[FailureTuple]]:
    """Say what keeps `base_obj` from being serialized, printing the search.

    Arguments:
        base_obj: the object to check.
        name: its name, for the report.
        depth: how many levels of members and closure variables to walk (default 3).
        print_file: where to print (`file=` of print(); default stdout).

    Returns:
        (whether it serializes, the set of FailureTuples found).
    """
    return _inspect(base_obj, name, depth, None, None, _Printer(print_file), ())


def _inspect(
    base_obj: Any,
    name: str | None,
    depth: int,
    parent: Any,
    failures: set[FailureTuple] | None,
    printer: _Printer,
    path: tuple[Any, ...],
) -> tuple[bool, set[FailureTuple]]:
    top_level = failures is None
    found: set[FailureTuple] = set() if failures is None else failures
    declaration = f"Checking Serializability of {base_obj}"
    rule = "=" * min(len(declaration), 80)
    if top_level:
        printer.print(rule)
        printer.print(declaration)
        printer.print(rule)
    else:
        printer.print(f"Serializing '{name}' {base_obj}...")
    here = path + ((name,) if name is not None else ())
    try:
        cloudpickle.dumps(base_obj)
        return True, found
    except Exception as exc:
        printer.print(f"{printer.red('!!! FAIL')} serialization: {exc}")
        if depth == 0:
            with contextlib.suppress(Exception):  # an unhashable culprit goes unnamed
                found.add(FailureTuple(base_obj, here, parent))
    if depth <= 0:
        return False, found

    if inspect.isfunction(base_obj):
        _inspect_closure(base_obj, depth, found, printer, here)
    else:
        _inspect_members(base_obj, depth, found, printer, here)
    if not found:
        found.add(FailureTuple(base_obj, here, parent))

    if top_level:
        printer.print(rule)
        names = "\n".join(str(f) for f in found)
        printer.print(
            f"Variable: \n\n\t{printer.bright(names)}\n\nwas found to be non-serializable. "
            "There may be multiple other undetected variables that were non-serializable. "
        )
        printer.print(
            "Consider either removing the instantiation/imports of these variables or moving "
            "the instantiation into the scope of the function/class. "
        )
        printer.print(rule)
        printer.print(f"Check {_DOCS} for more information.")
        printer.print(
            "If you have any suggestions on how to improve this error message, please reach "
            "out to the raylite developers."
        )
        printer.print(rule)
    return False, found


def _try_each(
    members: Any,
    depth: int,
    parent: Any,
    found: set[FailureTuple],
    printer: _Printer,
    path: Any,
    hit: bool,
) -> bool:
    """Inspect members one by one until one does not serialize; True if any did (or
    `hit` already was: then only the first member is tried, as Ray's walk does)."""
    for name, obj in members:
        ok, _ = _inspect(obj, name, depth - 1, parent, found, printer, path)
        hit = hit or not ok
        if hit:
            break
    return hit


def _inspect_closure(
    fn: Any, depth: int, found: set[FailureTuple], printer: _Printer, path: tuple[Any, ...]
) -> None:
    printer.print(f"Inspecting closure of '{fn.__qualname__}':")
    closure = inspect.getclosurevars(fn)
    hit = False
    for kind, variables in (("global", closure.globals), ("nonlocal", closure.nonlocals)):
        if variables:
            printer.print(
                f"Detected {len(variables)} {kind} variables. Checking serializability..."
            )
            with printer.indent():
                hit = _try_each(variables.items(), depth, fn, found, printer, path, hit)
    if not hit:
        printer.print(
            f"WARNING: Did not find non-serializable object in {fn.__qualname__}. "
            "This may be because the object is only non-serializable when combined with "
            "other objects, or because cloudpickle and the traversal disagree on which "
            "object causes the failure. Try calling `inspect_serializability` directly on "
            "the suspected object, or simplify the closure to isolate the cause."
        )


def _inspect_members(
    obj: Any, depth: int, found: set[FailureTuple], printer: _Printer, path: tuple[Any, ...]
) -> None:
    functions = inspect.getmembers(obj, predicate=inspect.isfunction)
    with printer.indent():
        hit = _try_each(functions, depth, obj, found, printer, path, False)
    members = [
        (n, m)
        for n, m in inspect.getmembers(obj)
        if not (n.startswith("__") and n.endswith("__")) and not inspect.isbuiltin(m)
    ]
    with printer.indent():
        hit = _try_each(members, depth, obj, found, printer, path, hit)
    if not hit:
        what = obj.__name__ if inspect.isclass(obj) else f"{type(obj).__name__} instance"
        printer.print(
            f"WARNING: Did not find non-serializable object in {what}. This may be because "
            "the object is only non-serializable when combined with other objects, or "
            "because cloudpickle and the traversal disagree. Try calling "
            "`inspect_serializability` on individual attributes to isolate the cause."
        )
