"""`init(local_mode=True)`: a debug mode. Tasks and actor calls run inline, in the
driver's own thread, in submission order, so `pdb.set_trace()`, breakpoints and
print debugging work in them. Ray 2.60 removed local mode; raylite keeps it as what
it is: a way to debug the logic of a program, not to run it (nothing is parallel).

Owns the mode's flag, running a task or an actor call inline, and local actors
(LocalActorHandle, their names). Not the objects: results and errors go into the
session's object store as always, so `get`, `wait`, `put` and refs behave as in a
normal session: a task's exception is raised at `get` as a RayTaskError, values come
back as copies (numpy arrays read-only), top-level ref arguments are passed as their
values. Arguments passed by value are copied too (pickled and unpickled; refs and
actor handles inside keep their identity), so a task cannot change its caller's data.

    f.remote(x) ─▶ run_task: resolve refs, copy, call f ─▶ put(result) | put_error
    A.remote()  ─▶ LocalActorHandle(instance)  ─▶ h.m.remote(x): run the method inline

What differs from a normal session, on purpose: no parallelism, no resources or
scheduling options take effect (they are checked as usual), `cancel` finds every task
finished, and an actor's process is the driver (`kill` ends the handle, not a process).
"""

from __future__ import annotations

import inspect
import io
import os
import pickle
from collections.abc import AsyncIterator, Iterator
from typing import Any

import cloudpickle

from . import protocol as P
from .core import context
from .core.return_modes import method_mode
from .exceptions import ActorDiedError, RayTaskError
from .object_ref import ObjectRef, new_id
from .object_ref_generator import DynamicObjectRefGenerator, ObjectRefGenerator
from .serialization import capture_error, dumps_inline

_named: dict[tuple[str, str], LocalActorHandle] = {}


def start() -> None:
    context.LOCAL_MODE = True


def stop() -> None:
    context.LOCAL_MODE = False
    _named.clear()


# --- arguments ----------------------------------------------------------------------
class _Keep(cloudpickle.Pickler):
    """Copies a value, keeping refs and local actor handles (identity matters) as they are."""

    def __init__(self, file: io.BytesIO, kept: list[Any]) -> None:
        super().__init__(file, protocol=5)
        self.kept = kept

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, ObjectRef | LocalActorHandle):
            self.kept.append(obj)
            return len(self.kept) - 1
        return None


def _copy(value: Any) -> Any:
    if value is None or isinstance(value, int | float | str | bytes | bool):
        return value
    buf = io.BytesIO()
    kept: list[Any] = []
    _Keep(buf, kept).dump(value)
    unpickler = pickle.Unpickler(io.BytesIO(buf.getvalue()))
    unpickler.persistent_load = kept.__getitem__  # type: ignore[assignment]
    return unpickler.load()


def _arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Top-level refs as their values (a failed one raises its error), the rest copied."""
    cw = context.global_worker()

    def one(value: Any) -> Any:
        return cw.get([value], None)[0] if isinstance(value, ObjectRef) else _copy(value)

    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


# --- running a call -------------------------------------------------------------------
def _error_refs(exc: BaseException, name: str, n: int) -> list[ObjectRef]:
    if isinstance(exc, RayTaskError):  # an argument's task failed: its error, as a worker
        blob = dumps_inline(RayTaskError(exc.function_name, exc.traceback_str, exc.cause, exc.pid))
    else:
        blob = capture_error(exc, name, os.getpid())
    cw = context.global_worker()
    return [cw.put_error(blob) for _ in range(max(n, 1))]


def _returns(result: Any, n: int, name: str) -> list[ObjectRef]:
    cw = context.global_worker()
    if n == 1:
        return [cw.put(result)]
    values = list(result)
    if len(values) != n:
        raise ValueError(f"Task {name} declared num_returns={n} but returned {len(values)} values")
    return [cw.put(v) for v in values]


def _call(fn: Any, name: str, args: tuple, kwargs: dict, n: int, generator: Any) -> Any:
    """Run fn inline; what `.remote()` returns."""
    mode = generator[0] if generator is not None else 0
    try:
        a, k = _arguments(args, kwargs)
        result = fn(*a, **k)
        if inspect.iscoroutine(result):
            import asyncio  # not at import: drivers do not load asyncio otherwise

            result = asyncio.run(result)
        if mode in (P.GENERATOR_STREAMING, P.GENERATOR_DYNAMIC):
            cw = context.global_worker()
            refs = [cw.put(item) for item in _drain(result)]
            if mode == P.GENERATOR_DYNAMIC:
                return cw.put(DynamicObjectRefGenerator(refs))
            return LocalObjectRefGenerator(refs)
        if mode == P.GENERATOR_FIXED:
            result = tuple(_drain(result))
        refs = _returns(result, n, name)
    except Exception as exc:
        refs = _error_refs(exc, name, n)
        if mode in (P.GENERATOR_STREAMING, P.GENERATOR_DYNAMIC):
            return refs[0] if mode == P.GENERATOR_DYNAMIC else LocalObjectRefGenerator(refs)
    if n == 0:
        return None
    return refs[0] if n == 1 else refs


def _drain(gen: Any) -> list[Any]:
    if inspect.isasyncgen(gen):
        import asyncio

        async def collect() -> list[Any]:
            return [item async for item in gen]

        return asyncio.run(collect())
    return list(gen)


def run_task(fn: Any, name: str, args: tuple, kwargs: dict, n: int, generator: Any) -> Any:
    """A remote function's `.remote()` in local mode."""
    return _call(fn, name, args, kwargs, n, generator)


class LocalObjectRefGenerator(ObjectRefGenerator):
    """A streaming generator's refs in local mode: all there once `.remote()` returns."""

    def __init__(self, refs: list[ObjectRef]) -> None:  # no stream: nothing to wait for
        self._refs = list(refs)
        self._done = ObjectRef(new_id(), "", _count=False)

    def __iter__(self) -> Iterator[ObjectRef]:  # type: ignore[override]
        return self

    def __next__(self) -> ObjectRef:
        if not self._refs:
            raise StopIteration
        return self._refs.pop(0)

    def __aiter__(self) -> AsyncIterator[ObjectRef]:  # type: ignore[override]
        return self

    async def __anext__(self) -> ObjectRef:
        if not self._refs:
            raise StopAsyncIteration
        return self._refs.pop(0)

    def next_ready(self) -> bool:
        return True

    def is_finished(self) -> bool:
        return not self._refs

    def __repr__(self) -> str:
        return f"LocalObjectRefGenerator({len(self._refs)} refs left)"


# --- actors -----------------------------------------------------------------------------
class LocalActorHandle:
    """An actor in local mode: its instance lives in the driver; calls run inline."""

    def __init__(
        self, instance: Any, cls: type, methods: dict[str, Any], method_options: Any
    ) -> None:
        self._instance = instance
        self._method_options = method_options  # actors.method_options (no import cycle)
        self._cls = cls
        self._class_name = cls.__name__
        self._methods = methods
        self._dead: str | None = None

    def __getattr__(self, name: str) -> LocalActorMethod:
        if name.startswith("__") and name not in ("__ray_ready__", "__ray_terminate__"):
            raise AttributeError(name)
        if name not in ("__ray_ready__", "__ray_terminate__") and not callable(
            getattr(self._cls, name, None)
        ):
            raise AttributeError(f"'{self._class_name}' object has no attribute '{name}'")
        return LocalActorMethod(self, name, _num_returns(self._methods.get(name, 1)))

    def __repr__(self) -> str:
        return f"LocalActor({self._class_name})"

    def __reduce__(self) -> Any:
        raise TypeError("A local-mode actor handle cannot leave the driver (local_mode=True).")


def _num_returns(entry: Any) -> int:
    """A method table entry's code: an int, or [code, retries, retry_exceptions]."""
    return int(entry[0] if isinstance(entry, list) else entry)


class LocalActorMethod:
    def __init__(self, handle: LocalActorHandle, name: str, code: int) -> None:
        self._handle = handle
        self._name = name
        self._code = code  # the method table's entry (actors.py): num_returns or a generator's

    def options(self, **options: Any) -> LocalActorMethod:
        if "num_returns" not in options and "_generator_backpressure_num_objects" not in options:
            return self
        code = self._handle._method_options(self._code, options)
        return LocalActorMethod(self._handle, self._name, code)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        handle = self._handle
        name = f"{handle._class_name}.{self._name}"
        n, generator = method_mode(self._code)
        if handle._dead is not None:
            error = ActorDiedError(handle._dead)
            cw = context.global_worker()
            refs = [cw.put_error(dumps_inline(error)) for _ in range(max(n, 1))]
            return None if n == 0 else (refs[0] if n == 1 else refs)
        if self._name == "__ray_ready__":
            return _call(lambda: True, name, (), {}, 1, None)
        if self._name == "__ray_terminate__":
            handle._dead = f"The actor {handle._class_name} was terminated."
            return None
        method = getattr(handle._instance, self._name)
        return _call(method, name, args, kwargs, n, generator)


def create_actor(cls: type, options: dict[str, Any], methods: dict[str, Any], args: tuple,
                 kwargs: dict, method_options: Any) -> LocalActorHandle:  # fmt: skip
    """An actor class's `.remote()` in local mode: the constructor runs now, inline."""
    name = options.get("name")
    namespace = options.get("namespace") or context.global_worker().default_namespace()
    if name is not None:
        found = _named.get((namespace, name))
        if found is not None and found._dead is None:
            if options.get("get_if_exists"):
                return found
            raise ValueError(f"The name {name!r} (namespace={namespace!r}) is already taken.")
    a, k = _arguments(args, kwargs)
    try:
        instance = cls(*a, **k)
        dead = None
    except Exception as exc:
        instance, dead = None, f"The actor {cls.__name__} died in its constructor: {exc!r}"
    handle = LocalActorHandle(instance, cls, methods, method_options)
    handle._dead = dead
    if name is not None:
        _named[(namespace, name)] = handle
    return handle


def get_actor(name: str, namespace: str | None) -> LocalActorHandle:
    ns = namespace or context.global_worker().default_namespace()
    handle = _named.get((ns, name))
    if handle is None or handle._dead is not None:
        raise ValueError(f"Failed to look up actor with name {name!r} in namespace {ns!r}.")
    return handle


def kill(handle: LocalActorHandle) -> None:
    handle._dead = f"The actor {handle._class_name} was killed by raylite.kill()."
    for key, value in list(_named.items()):
        if value is handle:
            del _named[key]
