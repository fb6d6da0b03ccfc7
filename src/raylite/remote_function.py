"""RemoteFunction, .options(), .remote(), and option checking shared with actors.

Also where a task or actor is put in a placement group (placement_of, placed): Ray's
checks of the bundle index and shape, the shape renamed to the bundle's resources
(bundles.py), and the group passed to the worker, whose children it captures if asked.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import bundles
from .config import to_units
from .core import context
from .core.return_modes import (
    GENERATOR_FIXED,
    check_backpressure,
    check_num_returns,
    generator_mode,
    is_generator_function,
)
from .object_ref import ObjectRef, new_id

if TYPE_CHECKING:
    import inspect

# Not imported here: the wire protocol, serialization, local mode and the generator
# refs (~50 ms). `@ray.remote` before `init()` loads this module, and driver_start
# starts the node only if the driver's modules have not loaded yet; they load in
# init() (api.py), while the node boots.

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
    for key in ("name", "namespace"):  # Ray's check and words
        if key in options and options[key] is not None and not isinstance(options[key], str):
            raise TypeError(
                f"The type of keyword '{key}' must be (<class 'str'>, <class 'NoneType'>), "
                f"but received type {type(options[key])}"
            )
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
    ete = options.get("enable_task_events", True)
    if not isinstance(ete, bool):  # as Ray: a bool, None included
        raise TypeError(
            "The type of keyword 'enable_task_events' must be <class 'bool'>, but received "
            f"type {type(ete)}"
        )
    osm = options.get("object_store_memory")
    if osm is not None:
        if isinstance(osm, bool) or not isinstance(osm, int):
            raise TypeError(
                "The type of keyword 'object_store_memory' must be an int or None, but "
                f"received type {type(osm)}"
            )
        if kind == "task":  # Ray's own answer: only actors take it
            raise ValueError("Setting 'object_store_memory' is not implemented for tasks")
        if osm < 0:
            raise ValueError(
                "The keyword 'object_store_memory' only accepts None, 0 or a positive integer."
            )
    if kind == "actor" and "object_store_memory" in options:
        warnings.warn(  # Ray's words; it is still a demand on the node (actors.py)
            "Setting 'object_store_memory' for actors is deprecated since it doesn't "
            "actually reserve the required object store memory. Use object spilling "
            "that's enabled by default instead to bypass the object store memory size "
            "limitation.",
            DeprecationWarning,
            stacklevel=3,
        )
    if "max_calls" in options:
        check_max_calls(options["max_calls"])
    return options


QUIET = {"task_events": False}  # enable_task_events=False (never changed in place)


_UNREAD = -2  # RemoteFunction._arity before its first call has read the signature


def _plain_arity(signature: inspect.Signature | None) -> int:
    """How many positional arguments bind to `signature` without checking: its count
    of parameters where all are positional without defaults (a call with that many and
    no keywords is valid), else -1 (every call is bound to find out)."""
    if signature is None:
        return -1
    import inspect

    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = signature.parameters.values()
    if all(p.kind in plain and p.default is inspect.Parameter.empty for p in params):
        return len(signature.parameters)
    return -1


def check_max_calls(n: Any) -> None:
    """max_calls: how many times one worker process runs the function before it exits
    (0: no limit), as Ray; only on the function itself, not in .options()."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(
            f"The type of keyword 'max_calls' must be an int or None, but received type {type(n)}"
        )
    if n < 0:
        raise ValueError("The keyword 'max_calls' only accepts None, 0 or a positive integer.")


# --- placement groups ------------------------------------------------------------------
# A task or actor placed in a group: PushTask.actor_options["placement_group"] carries
# [group id, bundle index, capture child tasks, bundles] to the worker (its
# get_current_placement_group() and its children's capture); its resource shape is
# renamed to the bundle's (bundles.py).
NEVER, INHERIT, CURRENT = 0, 1, 2  # capture modes of options without a group of their own
_PG_KEYS = frozenset(
    {"scheduling_strategy", "placement_group", "placement_group_bundle_index",
     "placement_group_capture_child_tasks"}
)  # fmt: skip


def placement_of(
    options: dict[str, Any], what: str, actor: bool = False
) -> tuple[list[Any] | None, int]:
    """(the group context, or None; the capture mode when None) of these options, with
    Ray's checks of the bundle index and of the shape against the bundles."""
    strategy = options.get("scheduling_strategy")
    in_group = False
    if strategy is not None:  # (a plain program never loads ray.util for this)
        from .util.scheduling_strategies import PlacementGroupSchedulingStrategy

        in_group = isinstance(strategy, PlacementGroupSchedulingStrategy)
    pg = options.get("placement_group", "default")
    index = options.get("placement_group_bundle_index", -1)
    if index is None:
        index = -1
    capture = options.get("placement_group_capture_child_tasks")
    if not in_group:
        _warn_deprecated(pg, index, capture)
    if in_group:
        pg = strategy.placement_group
        index = strategy.placement_group_bundle_index
        capture = strategy.placement_group_capture_child_tasks
    elif strategy is not None:
        return None, NEVER  # "DEFAULT", "SPREAD", node affinity: no group, no capture
    if pg == "default":
        if capture is False:
            return None, NEVER
        if index != -1:
            raise ValueError("If placement group is not set, the value of bundle index must be -1.")
        return None, CURRENT if capture else INHERIT
    if not pg or pg.is_empty:
        if index != -1:
            raise ValueError("If placement group is not set, the value of bundle index must be -1.")
        return None, NEVER
    specs = pg.bundle_specs
    return placed(pg.id.binary(), specs, index, bool(capture), options, what, actor), NEVER


def _warn_deprecated(pg: Any, index: int, capture: Any) -> None:
    """Ray's warnings for the options older than PlacementGroupSchedulingStrategy."""
    use = "Use scheduling_strategy=PlacementGroupSchedulingStrategy(...) instead."
    for name, used in (
        ("placement_group", pg != "default"),
        ("placement_group_bundle_index", index != -1),
        ("placement_group_capture_child_tasks", bool(capture)),
    ):
        if used:
            warnings.warn(
                f"{name} parameter is deprecated. {use}", DeprecationWarning, stacklevel=5
            )


def placed(
    pg_id: bytes,
    specs: list[dict[str, float]],
    index: Any,
    capture: bool,
    options: dict[str, Any],
    what: str,
    actor: bool,
) -> list[Any]:
    """The context of a task or actor in bundle `index` of the group, checked."""
    if isinstance(index, bool) or not isinstance(index, int) or not -1 <= index < len(specs):
        raise ValueError(
            f"placement group bundle index {index} is invalid. Valid placement group "
            f"indexes: 0-{len(specs)}"
        )
    if options.get("accelerator_type"):
        raise NotImplementedError(
            "accelerator_type for a task or actor in a placement group is not supported by "
            "raylite yet; put the accelerator in the group's bundles (e.g. {'GPU': 1})."
        )
    asked: dict[str, Any] = {}
    cpus = options.get("num_cpus")
    if cpus is None and not actor:
        cpus = 1
    if cpus:
        asked["CPU"] = cpus
    if options.get("num_gpus"):
        asked["GPU"] = options["num_gpus"]
    if options.get("memory"):
        asked["memory"] = options["memory"]
    for k, v in (options.get("resources") or {}).items():
        if v:
            asked[k] = v

    def fits(shape: dict[str, Any]) -> bool:
        return any(all(b.get(k, 0) >= v for k, v in shape.items()) for b in specs)

    if not fits(asked):
        raise ValueError(
            f"Cannot schedule {what} with the placement group because the resource request "
            f"{asked} cannot fit into any bundles for the placement group, {specs}."
        )
    if actor and options.get("num_cpus") is None and not fits({**asked, "CPU": 1}):
        raise ValueError(
            f"Cannot schedule {what} with the placement group because the actor requires "
            "1 CPU for creation, but it cannot fit into any bundles for the placement "
            f"group, {specs}. Consider creating a placement group with CPU resources."
        )
    return [pg_id, index, capture, specs]


def in_group(shape: dict[str, int], ctx: list[Any]) -> dict[str, int]:
    """The shape a task or actor of `shape` asks for in its bundle."""
    return bundles.task_shape(shape, ctx[0].hex(), ctx[1])


def strategy_of(options: dict[str, Any]) -> Any:
    """The strategy as the core keeps it: its wire form, or that and the
    label_selector (labels.Selected), computed once per options."""
    strategy = options.get("scheduling_strategy")
    if strategy is not None:
        from .util.scheduling_strategies import to_wire

        strategy = to_wire(strategy)
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
        # Read at the first call (_check_call): @remote runs before init() starts the
        # node, which would wait for inspect's import (~10 ms) and the signature.
        self._signature: inspect.Signature | None = None
        self._arity = _UNREAD
        # max_calls: as Ray, a GPU function's worker exits after each call by default
        # (the GPU memory its libraries hold goes with the process).
        max_calls = self._options.get("max_calls")
        if max_calls is None and (self._options.get("num_gpus") or 0) > 0:
            max_calls = 1
        self._max_calls: int = max_calls or 0
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
        # The task's own options on the wire (core/tasks.task_events_off, a placement
        # group's context for the worker); None: none.
        task_options: dict[str, Any] = {} if options.get("enable_task_events", True) else {**QUIET}
        # A placement group: the shape is the bundle's; the worker learns the group.
        if _PG_KEYS.isdisjoint(options):  # no group named: only a parent's to capture
            pg, self._capture = None, INHERIT
        else:
            name = getattr(getattr(self, "_fn", self), "_name", "task")
            pg, self._capture = placement_of(options, name)
        if pg is not None:
            task_options["placement_group"] = pg
            self._shape = in_group(self._shape, pg)
        self._task_options = task_options or None
        self._runtime_env = runtime_env_of(options)
        self._renv: Any = None  # (core worker, its resolved env and key), at the first call
        retries = options.get("max_retries")
        self._max_retries = DEFAULT_MAX_RETRIES if retries is None else retries
        retry = options.get("retry_exceptions", False)
        if isinstance(retry, (list, tuple)):
            for cls in retry:
                if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                    raise ValueError(  # Ray's words
                        "retry_exceptions must be either a boolean or a list of exceptions"
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
            from .serialization import dumps_function

            self._blob = dumps_function(self._function, self._max_calls)
        return self._blob

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._submit(args, kwargs, self)

    def _check_call(self, args: tuple, kwargs: dict) -> None:
        """Ray's TypeError for arguments the function cannot take, at .remote()."""
        if self._arity == _UNREAD:
            import inspect

            try:
                self._signature = inspect.signature(self._function)
            except (TypeError, ValueError):  # builtins without a signature
                self._signature = None
            self._arity = _plain_arity(self._signature)
            if not kwargs and len(args) == self._arity:
                return
        if self._signature is not None:
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{self._name}.remote(): {exc}") from None

    def _submit(self, args: tuple, kwargs: dict, opts: Any) -> Any:
        if kwargs or len(args) != self._arity:
            self._check_call(args, kwargs)
        cw = context.global_worker()
        if context.LOCAL_MODE:  # init(local_mode=True): run it here, now
            from . import local_mode

            name = opts._display_name()
            return local_mode.run_task(
                self._function, name, args, kwargs, opts._num_returns, opts._generator
            )
        if self._blob is None:  # pickled at the first call, as Ray: globals are read now
            self._pickled()
        if cw.placement_group is not None and opts._capture:  # in a group: children too?
            opts = self._captured(opts, cw.placement_group)
        refs = cw.submit_task(
            name=opts._display_name(),
            function_id=self._function_id,
            function_blob=self._blob,  # pickled above: bytes, not a method to keep per call
            args=args,
            kwargs=kwargs,
            num_returns=opts._num_returns,
            shape=opts._shape,
            max_retries=opts._max_retries,
            retry_exceptions=opts._retry_exceptions,
            strategy=opts._strategy,
            generator=opts._generator,
            actor_options=opts._task_options,
            max_calls=self._max_calls,
            runtime_env=(
                None
                if opts._runtime_env is None and cw.parent_runtime_env is None
                else _env_of(cw, opts)
            ),
        )
        if opts._generator is not None and opts._generator[0] != GENERATOR_FIXED:
            from .object_ref_generator import generator_result

            return generator_result(cw, refs, opts._generator[0])
        if opts._num_returns == 1:
            return refs[0]
        if opts._num_returns == 0:
            return None
        return refs

    def _display_name(self) -> str:
        return self._options.get("name") or self._name

    def _captured(self, opts: Any, ctx: list[Any]) -> Any:
        """`opts` placed in the current task's group (any bundle), if it captures its
        children (or the options asked for it: capture=True without a group)."""
        if opts._capture == INHERIT and not ctx[2]:
            return opts
        placed_ctx = placed(ctx[0], ctx[3], -1, True, opts._options, self._name, False)
        bound = _BoundOptions(self, opts._options)
        bound._task_options = {**(opts._task_options or {}), "placement_group": placed_ctx}
        bound._shape = in_group(resource_shape(opts._options, 1), placed_ctx)
        return bound

    def options(self, **options: Any) -> _BoundOptions:
        _no_max_calls(options)
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
        _no_max_calls(options)
        validate_options(options, "task")
        return _BoundOptions(self._fn, {**self._options, **options})


def _no_max_calls(options: dict[str, Any]) -> None:
    if "max_calls" in options:  # as Ray: a property of the function's workers
        raise ValueError("Setting 'max_calls' is not supported in '.options()'.")


__all__ = ["ObjectRef", "RemoteFunction", "resource_shape", "validate_options"]
