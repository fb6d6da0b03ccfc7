"""RemoteFunction, .options(), .remote(), and option checking shared with actors."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from . import protocol as P
from .config import to_units
from .core import context
from .object_ref import ObjectRef, new_id
from .object_ref_generator import generator_result
from .serialization import dumps_function

_COMMON = {
    "num_cpus",
    "num_gpus",
    "resources",
    "memory",
    "object_store_memory",
    "accelerator_type",
    "scheduling_strategy",
    "runtime_env",
    "placement_group",
    "placement_group_bundle_index",
    "placement_group_capture_child_tasks",
    "label_selector",
    "_metadata",
    "name",
    "enable_task_events",
    "_labels",
}
TASK_OPTIONS = _COMMON | {
    "num_returns",
    "max_retries",
    "retry_exceptions",
    "max_calls",
    "_generator_backpressure_num_objects",
}
ACTOR_OPTIONS = _COMMON | {
    "max_restarts",
    "max_task_retries",
    "max_concurrency",
    "namespace",
    "lifetime",
    "get_if_exists",
    "max_pending_calls",
    "concurrency_groups",
    "allow_out_of_order_execution",
}

# Ray's documented default of a task's max_retries: part of the API, not a tunable.
DEFAULT_MAX_RETRIES = 3


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"The '{name}' option must be a number, got {type(value).__name__}.")
    if value < 0:
        raise ValueError(f"The '{name}' option must be non-negative, got {value}.")
    return float(value)


def validate_options(options: dict[str, Any], kind: str) -> dict[str, Any]:
    """Check option names and values; raise the error a Ray user would expect."""
    valid = TASK_OPTIONS if kind == "task" else ACTOR_OPTIONS
    for key in options:
        if key not in valid:
            raise ValueError(
                f"Invalid option keyword {key} for {'remote functions' if kind == 'task' else 'actors'}. "
                f"Valid ones are {sorted(valid)}."
            )
    for key in ("num_cpus", "num_gpus", "memory"):
        if options.get(key) is not None:
            _number(key, options[key])
    res = options.get("resources")
    if res is not None:
        if not isinstance(res, dict):
            raise TypeError(f"The 'resources' option must be a dict, got {type(res).__name__}.")
        for k, v in res.items():
            if k in ("CPU", "GPU"):
                raise ValueError(
                    "Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and 'GPU' in "
                    "'resources' keyword"
                )
            if not isinstance(k, str):
                raise TypeError(f"Resource names must be strings, got {k!r}.")
            _number(f"resources[{k!r}]", v)
    if options.get("num_returns") is not None:
        check_num_returns(options["num_returns"])
    if "_generator_backpressure_num_objects" in options:
        check_backpressure(options["_generator_backpressure_num_objects"])
    mr = options.get("max_retries")
    if mr is not None:
        if isinstance(mr, bool) or not isinstance(mr, int):
            raise TypeError(f"The 'max_retries' option must be an int, got {type(mr).__name__}.")
        if mr < -1:
            raise ValueError(f"The 'max_retries' option must be >= -1, got {mr}.")
    if "scheduling_strategy" in options:
        from .util.scheduling_strategies import to_wire

        to_wire(options["scheduling_strategy"])  # TypeError for what is not a strategy
    if options.get("placement_group") not in (None, "default"):
        raise NotImplementedError("Placement groups are not supported by raylite yet.")
    if options.get("runtime_env") is not None:
        from .runtime_env.spec import check_uris_only, validate

        # Ray's errors for a malformed env, here; local paths only in the job's env
        check_uris_only(validate(options["runtime_env"]))
    if options.get("label_selector") is not None:
        from .labels import check_selector

        check_selector(options["label_selector"])
    if options.get("_labels") is not None:
        from .labels import check_task_labels

        check_task_labels(options["_labels"])
    at = options.get("accelerator_type")
    if at is not None and (not isinstance(at, str) or not at):
        raise TypeError(f"accelerator_type must be a non-empty string, got {at!r}")
    # Accepted by Ray, not done here yet: an error, never a silent no-op.
    for key, unset in _NOT_YET.items():
        if key in options and options[key] not in unset:
            raise NotImplementedError(f"The {key!r} option is not supported by raylite yet.")
    return options


_NOT_YET: dict[str, tuple[Any, ...]] = {
    "object_store_memory": (None, 0),
    "placement_group_bundle_index": (None, -1),
    "placement_group_capture_child_tasks": (None, False),
    "_metadata": (None, {}),
    "enable_task_events": (None, True),
    "max_calls": (None, 0),
}


def check_num_returns(n: Any) -> None:
    """An int >= 0, or "streaming" / "dynamic" (for generator functions only: checked
    where the function is known, generator_mode)."""
    if n in ("dynamic", "streaming"):
        return
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(
            "The 'num_returns' option must be an int, 'streaming' or 'dynamic', "
            f"got {type(n).__name__}."
        )
    if n < 0:
        raise ValueError(f"The 'num_returns' option must be >= 0, got {n}.")


def check_backpressure(n: Any) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(
            f"The '_generator_backpressure_num_objects' option must be an int, got {type(n).__name__}."
        )
    if n == 0:
        raise ValueError(
            "_generator_backpressure_num_objects=0 is not allowed. Use a value > 0. If the "
            "value is equal to 1, the behavior is identical to Python generator (generator "
            "1 object whenever `next` is called). Use -1 to disable this feature."
        )


def generator_mode(
    is_generator: bool, num_returns: Any, backpressure: Any
) -> tuple[int, tuple[int, int] | None]:
    """(num_returns to submit, submit_task's `generator`) of a function or method.

    A generator function streams by default (Ray 2.x); "dynamic" is the older API; an
    int makes its yields the returns."""
    if not is_generator:
        if num_returns in ("streaming", "dynamic"):
            raise ValueError(
                f"num_returns='{num_returns}' can only be used with generator functions "
                "(functions that use 'yield'). The decorated function is not a generator "
                "function."
            )
        return (1 if num_returns is None else num_returns), None
    bp = backpressure if backpressure is not None and backpressure > 0 else -1
    if num_returns in (None, "streaming"):
        return 1, (P.GENERATOR_STREAMING, bp)
    if num_returns == "dynamic":
        return 1, (P.GENERATOR_DYNAMIC, -1)
    return num_returns, (P.GENERATOR_FIXED, -1)


def is_generator_function(fn: Any) -> bool:
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def strategy_of(options: dict[str, Any]) -> Any:
    """The strategy as the core keeps it: its wire form, or that and the
    label_selector (labels.Selected), computed once per options."""
    from .util.scheduling_strategies import to_wire

    strategy = to_wire(options.get("scheduling_strategy"))
    selector = options.get("label_selector")
    if selector:
        from .labels import Selected

        return Selected(strategy, tuple(selector.items()))
    return strategy


def runtime_env_of(options: dict[str, Any]) -> dict[str, Any] | None:
    """The options' runtime_env in normal form (runtime_env/spec.py); None: none."""
    env = options.get("runtime_env")
    if env is None:
        return None
    from .runtime_env.spec import validate

    return validate(env)


def _env_of(cw: Any, opts: Any) -> tuple[dict[str, Any] | None, str]:
    """The resolved env of a submission (core/runtime_envs.py), kept on the options
    for the next call from the same process."""
    cached = opts._renv
    if cached is not None and cached[0] is cw:
        return cached[1]  # type: ignore[no-any-return]
    found = cw.runtime_env_for(opts._runtime_env)
    opts._renv = (cw, found)
    return found  # type: ignore[no-any-return]


def resource_shape(options: dict[str, Any], default_cpus: float) -> dict[str, int]:
    """Resource demand in units of 1/10000, zero entries dropped."""
    shape: dict[str, int] = {}
    cpus = options.get("num_cpus")
    cpus = default_cpus if cpus is None else cpus
    if cpus:
        shape["CPU"] = to_units(cpus)
    if options.get("num_gpus"):
        shape["GPU"] = to_units(options["num_gpus"])
    if options.get("memory"):
        shape["memory"] = to_units(options["memory"])
    for k, v in (options.get("resources") or {}).items():
        if v:
            shape[k] = to_units(v)
    if options.get("accelerator_type"):  # Ray's constraint: a node that has that type
        shape[f"accelerator_type:{options['accelerator_type']}"] = to_units(0.001)
    return shape


class RemoteFunction:
    """A function turned into a task by @remote; call it with `.remote()`."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]) -> None:
        self._function = function
        self._options = validate_options(dict(options), "task")
        self._function_id = new_id()
        self._blob: bytes | None = None
        self._name = getattr(function, "__name__", "task")
        self._is_generator = is_generator_function(function)
        try:
            self._signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):  # builtins without a signature
            self._signature = None
        self._setup(self._options)
        functools.update_wrapper(self, function)

    def _setup(self, options: dict[str, Any]) -> None:
        self._num_returns, self._generator = generator_mode(
            self._is_generator,
            options.get("num_returns"),
            options.get("_generator_backpressure_num_objects"),
        )
        self._shape = resource_shape(options, 1)
        self._strategy = strategy_of(options)
        self._runtime_env = runtime_env_of(options)
        self._renv: Any = None  # (core worker, its resolved env and key), at the first call
        retries = options.get("max_retries")
        self._max_retries = DEFAULT_MAX_RETRIES if retries is None else retries
        retry = options.get("retry_exceptions", False)
        if isinstance(retry, (list, tuple)):
            for cls in retry:
                if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                    raise TypeError(
                        f"retry_exceptions must be a bool or a list of exception classes, got {cls!r}"
                    )
            self._retry_exceptions: bool | tuple[type, ...] = tuple(retry)
        elif isinstance(retry, bool):
            self._retry_exceptions = retry
        else:
            raise TypeError(f"retry_exceptions must be a bool or a list, got {retry!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Remote functions cannot be called directly. Instead of running "
            f"'{self._function.__module__}.{self._name}()', try "
            f"'{self._function.__module__}.{self._name}.remote()'."
        )

    def _pickled(self) -> bytes:
        if self._blob is None:
            self._blob = dumps_function(self._function)
        return self._blob

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._submit(args, kwargs, self)

    def _submit(self, args: tuple, kwargs: dict, opts: Any) -> Any:
        if self._signature is not None:
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{self._name}.remote(): {exc}") from None
        cw = context.global_worker()
        if self._blob is None:  # pickled at the first call, as Ray: globals are read now
            self._pickled()
        refs = cw.submit_task(
            name=opts._display_name(),
            function_id=self._function_id,
            function_blob=self._pickled,
            args=args,
            kwargs=kwargs,
            num_returns=opts._num_returns,
            shape=opts._shape,
            max_retries=opts._max_retries,
            retry_exceptions=opts._retry_exceptions,
            strategy=opts._strategy,
            generator=opts._generator,
            runtime_env=(
                None
                if opts._runtime_env is None and cw.parent_runtime_env is None
                else _env_of(cw, opts)
            ),
        )
        if opts._generator is not None and opts._generator[0] != P.GENERATOR_FIXED:
            return generator_result(cw, refs, opts._generator[0])
        if opts._num_returns == 1:
            return refs[0]
        if opts._num_returns == 0:
            return None
        return refs

    def _display_name(self) -> str:
        return self._options.get("name") or self._name

    def options(self, **options: Any) -> _BoundOptions:
        validate_options(options, "task")
        return _BoundOptions(self, {**self._options, **options})

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A DAG node that runs this task on `dag.execute()` (raylite.dag)."""
        from .dag.function_node import FunctionNode

        return FunctionNode(self._function, args, kwargs, self._options, _submitter=self)

    def __reduce__(self) -> Any:
        return (RemoteFunction, (self._function, self._options))


class _BoundOptions:
    """What `f.options(...)` returns: `.remote()` with the overridden options."""

    def __init__(self, fn: RemoteFunction, options: dict[str, Any]) -> None:
        self._fn = fn
        self._options = options
        self._is_generator = fn._is_generator
        RemoteFunction._setup(self, options)  # type: ignore[arg-type]

    def _display_name(self) -> str:
        return self._options.get("name") or self._fn._name

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn._submit(args, kwargs, self)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        from .dag.function_node import FunctionNode

        return FunctionNode(self._fn._function, args, kwargs, self._options, _submitter=self)

    def options(self, **options: Any) -> _BoundOptions:
        validate_options(options, "task")
        return _BoundOptions(self._fn, {**self._options, **options})


__all__ = ["ObjectRef", "RemoteFunction", "resource_shape", "validate_options"]
