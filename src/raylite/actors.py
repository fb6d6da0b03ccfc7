"""ActorClass, ActorHandle, and actor method calls.

Owns the caller's side of an actor: its options and checks, its method table (each
method's num_returns and @method call options, carried in handles), and a call's
options (name, retries, retry_exceptions, concurrency group). Not where calls run or
how concurrency groups execute (worker.py), nor call delivery (core/actor_client.py).
"""

from __future__ import annotations

import inspect
from typing import Any

from .config import to_units
from .core import context
from .core.return_modes import (
    GENERATOR_FIXED,
    check_backpressure,
    check_num_returns,
    generator_mode,
    is_generator_function,
    method_code,
    method_mode,
    options_of,
)
from .exceptions import PendingCallsLimitExceeded
from .object_ref import new_id
from .remote_function import (
    CURRENT,
    NEVER,
    QUIET,
    in_group,
    placed,
    placement_of,
    resource_shape,
    runtime_env_of,
    strategy_of,
    validate_options,
)

# Not imported here, as in remote_function.py: the wire protocol, serialization, local
# mode and the generator refs, so that `@ray.remote` on a class before `init()` leaves
# the driver's modules to load while the node boots (driver_start.py).


class ActorExitRequest(SystemExit):
    """Raised by exit_actor(); the worker ends the actor after the current call."""


def exit_actor() -> None:
    """End the current actor from inside one of its methods, as `ray.actor.exit_actor`."""
    cw = context._global
    if cw is None or cw.current_actor_id is None:
        raise TypeError("exit_actor() must be called from inside an actor method.")
    raise ActorExitRequest(0)


_METHOD_OPTIONS = (
    "num_returns",
    "concurrency_group",
    "max_task_retries",
    "retry_exceptions",
    "_generator_backpressure_num_objects",
    "enable_task_events",
)


def method(*args: Any, **kwargs: Any) -> Any:
    """`@method(num_returns=, concurrency_group=, max_task_retries=, retry_exceptions=,
    enable_task_events=)` on an actor method, as `ray.method`: that method's defaults for
    every call."""
    if args:
        raise TypeError("Use @raylite.method(num_returns=...) with keyword arguments only.")
    for key in kwargs:
        if key not in _METHOD_OPTIONS:
            raise ValueError(
                f"Unexpected keyword argument to @method: {key!r}. The supported keyword "
                f"arguments are {list(_METHOD_OPTIONS)}."
            )
    n = kwargs.get("num_returns")
    if n not in (None, "streaming", "dynamic") and (
        isinstance(n, bool) or not isinstance(n, int) or n < 0
    ):
        raise ValueError(f"num_returns must be an int >= 0, got {n!r}")
    backpressure = kwargs.get("_generator_backpressure_num_objects")
    check_backpressure(backpressure)
    group = kwargs.get("concurrency_group")
    if group is not None and (not isinstance(group, str) or not group):
        raise TypeError(f"concurrency_group must be a non-empty string, got {group!r}")
    retries = _check_retries(kwargs.get("max_task_retries"))
    retry_exceptions = _check_retry_exceptions(kwargs.get("retry_exceptions", False))
    task_events = kwargs.get("enable_task_events")  # None: the actor's
    if task_events is not None:
        _check_task_events(task_events)

    def decorate(fn: Any) -> Any:
        # Its method table entry (core/generators.py: a generator method's is a code).
        fn.__raylite_num_returns__ = method_code(
            *generator_mode(is_generator_function(fn), n, backpressure)
        )
        if group is not None:
            fn.__raylite_concurrency_group__ = group
        if retries is not None or retry_exceptions:
            fn.__raylite_call_options__ = (retries, retry_exceptions)
        if task_events is not None:
            fn.__raylite_task_events__ = task_events
        return fn

    return decorate


def _check_retries(retries: Any) -> int | None:
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < -1
    ):
        raise ValueError(f"max_task_retries must be an int >= -1, got {retries!r}")
    return retries


def _check_task_events(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(
            "The type of keyword 'enable_task_events' must be <class 'bool'>, but received "
            f"type {type(value)}"
        )
    return value


def _check_retry_exceptions(retry: Any) -> bool | tuple[type, ...]:
    """retry_exceptions: a bool, or a list of exception classes (as for tasks)."""
    if isinstance(retry, bool):
        return retry
    if isinstance(retry, list | tuple):
        if all(isinstance(c, type) and issubclass(c, BaseException) for c in retry):
            return tuple(retry)
        raise ValueError("retry_exceptions must be either a boolean or a list of exceptions")
    raise TypeError(
        f"retry_exceptions must be a bool or a list of exception classes, got {retry!r}"
    )


# A method table maps each method name to its num_returns (an int: a plain method, the
# hot path), or to [num_returns, max_task_retries, retry_exceptions] for a method whose
# @method set call options, with a fourth item False where its calls make no task
# events (enable_task_events=False, the method's or its actor's); retry_exceptions is
# a bool or the pickled tuple of classes. Under the key HANDLE_OPTIONS (no method has
# that name), what every handle of the actor must know: "out_of_order": True for an
# actor that runs its calls out of order, "max_task_retries": N where it is set (a
# handle from get_actor retries calls as the creator's does, as in Ray). The table travels in handles and, msgpacked,
# through the head for named actors.
MethodTable = dict[str, Any]
HANDLE_OPTIONS = "\0handle"


def _method_table(cls: type, task_events: bool = True) -> MethodTable:
    """`task_events`: the actor's enable_task_events (its methods' @method overrides it)."""
    table: MethodTable = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name != "__call__":
            continue
        if callable(member):
            n = getattr(member, "__raylite_num_returns__", None)
            if n is None:  # num_returns, or a generator method's code (core/generators.py)
                n = method_code(*generator_mode(is_generator_function(member), None, None))
            call = getattr(member, "__raylite_call_options__", None)
            events = getattr(member, "__raylite_task_events__", task_events)
            if call is None and events:
                table[name] = n
                continue
            retries, retry = call or (None, False)
            if not isinstance(retry, bool):  # a list of exception classes
                from .serialization import dumps_inline

                retry = dumps_inline(retry)
            entry = [n, retries, retry]
            if not events:
                entry.append(False)
            table[name] = entry
    return table


def concurrency_groups_of(cls: type) -> dict[str, str]:
    """Each method's @method(concurrency_group=...), for those that name one."""
    groups = {}
    for name, member in inspect.getmembers(cls):
        group = getattr(member, "__raylite_concurrency_group__", None)
        if group is not None:
            groups[name] = group
    return groups


def _check_groups(groups: Any) -> None:
    if groups is None:
        return
    if not isinstance(groups, dict):
        raise TypeError(
            "concurrency_groups must be a dict of group name to its max concurrency, "
            f"got {type(groups).__name__}"
        )
    for name, size in groups.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"A concurrency group's name must be a non-empty string, got {name!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f"The max concurrency of concurrency group {name!r} must be an int >= 1, "
                f"got {size!r}"
            )


class ActorClass:
    """A class turned into an actor by @remote; instantiate with `.remote()`."""

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = validate_options(dict(options), "actor")
        self._check(self._options)
        self._class_id = new_id()
        self._blob: bytes | None = None
        self._methods = _method_table(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__
        if any(inspect.iscoroutinefunction(m) for _, m in inspect.getmembers(cls)):
            self._async = True
        else:
            self._async = False

    @staticmethod
    def _check(options: dict[str, Any]) -> None:
        for key in ("max_restarts", "max_task_retries"):
            v = options.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise TypeError(  # Ray's words
                    f"The type of keyword '{key}' must be (<class 'int'>, <class "
                    f"'NoneType'>), but received type {type(v)}"
                )
            if v is not None and v < -1:
                raise ValueError(f"{key} must be an int >= -1 (-1: unlimited), got {v!r}")
        gie = options.get("get_if_exists")
        if gie is not None and not isinstance(gie, bool):
            raise TypeError(
                f"The type of keyword 'get_if_exists' must be <class 'bool'>, but received "
                f"type {type(gie)}"
            )
        mc = options.get("max_concurrency")
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or mc < 1):
            raise ValueError(f"max_concurrency must be an int >= 1, got {mc!r}")
        lifetime = options.get("lifetime")
        if lifetime not in (None, "detached", "non_detached"):
            raise ValueError(f"lifetime must be 'detached' or 'non_detached', got {lifetime!r}")
        name = options.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"An actor name must be a non-empty string, got {name!r}")
        if options.get("get_if_exists") and name is None:
            raise ValueError("get_if_exists=True needs a name= for the actor.")
        mp = options.get("max_pending_calls")
        if mp is not None:
            if isinstance(mp, bool) or not isinstance(mp, int):
                raise TypeError(
                    "The type of keyword 'max_pending_calls' must be an int or None, "
                    f"but received type {type(mp)}"
                )
            if mp < -1:
                raise ValueError(
                    "The keyword 'max_pending_calls' only accepts None, 0, -1 or a positive "
                    "integer, where -1 represents infinity."
                )
        _check_groups(options.get("concurrency_groups"))
        ooo = options.get("allow_out_of_order_execution")
        if ooo is not None and not isinstance(ooo, bool):
            raise TypeError(
                "The type of keyword 'allow_out_of_order_execution' must be (<class 'bool'>, "
                f"<class 'NoneType'>), but received type {type(ooo)}"
            )

    def _out_of_order(self, options: dict[str, Any]) -> bool:
        """allow_out_of_order_execution, as Ray: by default True for an async or threaded
        actor (whose calls overlap anyway), which cannot be told False."""
        ooo = options.get("allow_out_of_order_execution")
        threaded = (options.get("max_concurrency") or 1) > 1
        if ooo is None:
            return self._async or threaded
        if not ooo and self._async:
            raise ValueError(
                "If you're using async actors, Ray can't execute actor tasks in order. "
                "Set `allow_out_of_order_execution=True` to allow out-of-order execution."
            )
        if not ooo and threaded:
            raise ValueError(
                "If you're using multi-threaded actors, Ray can't execute actor tasks in "
                "order. Set `allow_out_of_order_execution=True` to allow out-of-order "
                "execution."
            )
        return ooo

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Actors cannot be instantiated directly. Instead of "
            f"'{self._cls.__name__}()', use '{self._cls.__name__}.remote()'."
        )

    def _pickled(self) -> bytes:
        if self._blob is None:
            from .serialization import dumps_function

            self._blob = dumps_function(self._cls)
        return self._blob

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._create(args, kwargs, self._options)

    def options(self, **options: Any) -> _ActorOptions:
        validate_options(options, "actor")
        if "concurrency_groups" in options:  # as Ray: only on the class
            raise ValueError("Setting 'concurrency_groups' is not supported in '.options()'.")
        merged = {**self._options, **options}
        self._check(merged)
        return _ActorOptions(self, merged)

    def _create(self, args: tuple, kwargs: dict, options: dict[str, Any]) -> ActorHandle:
        if context.LOCAL_MODE:  # init(local_mode=True): the instance lives here
            from . import local_mode

            handle = local_mode.create_actor(
                self._cls, options, self._methods, args, kwargs, method_options
            )
            return handle  # type: ignore[return-value]
        groups = options.get("concurrency_groups") or {}
        for method_name, group in concurrency_groups_of(self._cls).items():
            if group not in groups:
                raise ValueError(
                    f"The method {self._cls.__name__}.{method_name} is in concurrency group "
                    f"{group!r}, which the actor does not define: add it to "
                    "@remote(concurrency_groups={...})."
                )
        out_of_order = self._out_of_order(options)
        methods = self._methods
        task_events = options.get("enable_task_events", True)
        if not task_events:  # its calls make none either, but where @method says so
            methods = _method_table(self._cls, task_events=False)
        handle_options: dict[str, Any] = {}
        if out_of_order:
            handle_options["out_of_order"] = True
        if options.get("max_task_retries"):  # a handle from get_actor retries as this one
            handle_options["max_task_retries"] = options["max_task_retries"]
        if handle_options:
            methods = {**methods, HANDLE_OPTIONS: handle_options}
        cw = context.global_worker()
        self._pickled()  # at the first creation, as Ray: the globals it reads are read now
        # Ray's defaults: an actor that asks for nothing (or only memory) holds no CPU
        # while it lives; one that asks for a GPU or a custom resource but says no
        # num_cpus holds 1 CPU too.
        asks = options.get("num_gpus") is not None or bool(options.get("resources"))
        shape = resource_shape(options, 1 if asks else 0)
        if options.get("object_store_memory"):
            # As Ray: a demand on the node's object_store_memory resource (it reserves
            # no store memory; Ray deprecates it, validate_options warns).
            shape["object_store_memory"] = to_units(options["object_store_memory"])
        name = self._cls.__name__
        pg, capture = placement_of(options, name, actor=True)
        if pg is None and cw.placement_group is not None and capture != NEVER:
            ctx = cw.placement_group
            if capture == CURRENT or ctx[2]:  # created in a group that captures children
                pg = placed(ctx[0], ctx[3], -1, True, options, name, True)
        if pg is not None:
            shape = in_group(shape, pg)
        actor_options: dict[str, Any] = {
            "max_concurrency": options.get("max_concurrency"),
            "max_restarts": options.get("max_restarts") or 0,
            "max_task_retries": options.get("max_task_retries") or 0,
            "detached": (options.get("lifetime") or cw.default_actor_lifetime) == "detached",
            "concurrency_groups": groups or None,
            "name": options.get("name"),
            "placement_group": pg,
        }
        if not task_events:  # its creation makes no event (core/tasks.task_events_off)
            actor_options["task_events"] = False
        actor_id, address, ref = cw.create_actor(
            class_name=self._cls.__name__,
            function_id=self._class_id,
            function_blob=self._pickled,
            args=args,
            kwargs=kwargs,
            shape=shape,
            name=options.get("name"),
            namespace=options.get("namespace"),
            methods=methods,
            get_if_exists=bool(options.get("get_if_exists")),
            strategy=strategy_of(options),
            runtime_env=(
                None
                if options.get("runtime_env") is None and cw.parent_runtime_env is None
                else cw.runtime_env_for(runtime_env_of(options))
            ),
            actor_options=actor_options,
        )
        return ActorHandle(
            actor_id,
            self._cls.__name__,
            methods,
            address,
            options.get("max_task_retries") or 0,
            options.get("max_pending_calls") or -1,
            ref,
        )

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A DAG node that makes this actor on each `dag.execute()` (raylite.dag)."""
        from .dag.class_node import ClassNode

        return ClassNode(self._cls, args, kwargs, self._options, _submitter=self)


class _ActorOptions:
    def __init__(self, actor_class: ActorClass, options: dict[str, Any]) -> None:
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._actor_class._create(args, kwargs, self._options)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        from .dag.class_node import ClassNode

        return ClassNode(self._actor_class._cls, args, kwargs, self._options, _submitter=self)


class ActorHandle:
    """A reference to an actor; pass it to tasks and other actors freely."""

    def __init__(
        self,
        actor_id: bytes,
        class_name: str,
        methods: MethodTable,
        address: str | None,
        max_task_retries: int = 0,
        max_pending_calls: int = -1,
        ref: Any = None,
    ) -> None:
        # The creation's ObjectRef (owned by the creator): each handle, here or pickled
        # elsewhere, holds it, so the actor ends when the last handle goes (as in Ray).
        # None: a handle from get_actor or get_if_exists, which does not keep it alive.
        self._ref = ref
        self._max_pending_calls = max_pending_calls  # -1: unlimited
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods
        self._address = address
        handle_options = methods.get(HANDLE_OPTIONS)
        self._out_of_order = bool(handle_options and handle_options.get("out_of_order"))
        if handle_options and not max_task_retries:  # a handle from get_actor: the actor's
            max_task_retries = handle_options.get("max_task_retries", 0)
        self._max_task_retries = max_task_retries

    def __getattr__(self, name: str) -> ActorMethod:
        methods = self.__dict__.get("_methods")
        if methods is None or name not in methods:
            if name == "__ray_ready__" and methods is not None:
                return ActorMethod(self, name, 1)  # True once the actor is constructed
            raise AttributeError(
                f"'{self.__dict__.get('_class_name', 'Actor')}' actor has no method '{name}'"
            )
        spec = methods[name]
        if type(spec) is int:
            return ActorMethod(self, name, spec)
        if type(spec) is dict:  # HANDLE_OPTIONS: not a method
            raise AttributeError(f"'{self._class_name}' actor has no method {name!r}")
        n, retries, retry, *quiet = spec  # quiet: [False], enable_task_events=False
        if not isinstance(retry, bool):
            from .serialization import loads_inline

            retry = loads_inline(retry)
        method = ActorMethod(self, name, n, None, retries, retry)
        if quiet:
            method._task_options = QUIET
        return method

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __reduce__(self) -> Any:
        address = self._address
        cw = context._global
        if address is None and cw is not None:
            from .core.lifecycle import ALIVE  # loaded with the core worker already

            client = cw.actors.get(self._actor_id)
            # Only a constructed actor's address is handed on; otherwise the
            # receiver asks the head, which answers once the actor is ALIVE.
            address = client.address if client is not None and client.state is ALIVE else None
        return (
            _rebuild_handle,
            (
                self._actor_id,
                self._class_name,
                self._methods,
                address,
                self._max_task_retries,
                self._max_pending_calls,
                self._ref,
            ),
        )


def _rebuild_handle(
    actor_id: bytes,
    class_name: str,
    methods: MethodTable,
    address: str | None,
    max_task_retries: int = 0,
    max_pending_calls: int = -1,
    ref: Any = None,
) -> ActorHandle:
    return ActorHandle(
        actor_id, class_name, methods, address, max_task_retries, max_pending_calls, ref
    )


class ActorMethod:
    # The call's own options on the wire: QUIET for enable_task_events=False (set on
    # the few calls that have it; core/tasks.task_events_off), else None.
    _task_options: dict[str, Any] | None = None

    def __init__(
        self,
        handle: ActorHandle,
        name: str,
        num_returns: int,
        task_name: str | None = None,
        max_task_retries: int | None = None,
        retry_exceptions: bool | tuple[type, ...] = False,
        concurrency_group: str | None = None,
    ) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._task_name = task_name  # .options(name=...): the call's name in listings
        self._max_task_retries = max_task_retries  # .options(max_task_retries=...)
        self._retry_exceptions = retry_exceptions
        # .options(concurrency_group=...): the worker reads the group after a NUL in the
        # method's id (worker.py); a call without it runs in the method's own group.
        self._group = concurrency_group

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actor methods cannot be called directly. Instead of running 'object.{self._name}()', "
            f"try 'object.{self._name}.remote()'."
        )

    def options(self, **options: Any) -> ActorMethod:
        for key in options:
            if key not in (
                "num_returns",
                "name",
                "concurrency_group",
                "max_task_retries",
                "retry_exceptions",
                "enable_task_events",
                "_generator_backpressure_num_objects",
            ):
                raise ValueError(f"Invalid option {key!r} for an actor method call.")
        group = options.get("concurrency_group", self._group)
        if group is not None and (not isinstance(group, str) or not group):
            raise TypeError(f"concurrency_group must be a non-empty string, got {group!r}")
        retry = self._retry_exceptions
        if "retry_exceptions" in options:
            retry = _check_retry_exceptions(options["retry_exceptions"])
        task_events = self._task_options is None
        if "enable_task_events" in options:
            task_events = _check_task_events(options["enable_task_events"])
        retries = _check_retries(options.get("max_task_retries", self._max_task_retries))
        name = options.get("name", self._task_name)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"The 'name' option must be a string, got {type(name).__name__}.")
        n = self._num_returns
        if "num_returns" in options or "_generator_backpressure_num_objects" in options:
            n = method_options(n, options)
        method = ActorMethod(self._handle, self._name, n, name, retries, retry, group)
        if not task_events:
            method._task_options = QUIET
        return method

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A DAG node that calls this method on `dag.execute()` (raylite.dag).

        Its options are Ray's for a bound call (name, num_returns, concurrency_group,
        _generator_backpressure_num_objects), with those of this call's .options()
        that Ray's bind does not take (max_task_retries, retry_exceptions,
        enable_task_events) where they differ from the method's own: execute()
        passes them all to .options() and calls .remote(), so a generator method's
        node gives an ObjectRefGenerator, as one bound on Actor.bind() does in Ray.
        """
        from .dag.class_node import bind_actor_method

        n, generator = method_mode(self._num_returns)
        num_returns, backpressure = options_of(self._num_returns)
        options: dict[str, Any] = {
            "name": self._task_name or "",
            "num_returns": num_returns,
            "concurrency_group": self._group,
            "_generator_backpressure_num_objects": backpressure,
        }
        own = getattr(self._handle, self._name)  # the method's defaults (its @method)
        if self._max_task_retries != own._max_task_retries:
            options["max_task_retries"] = self._max_task_retries
        if self._retry_exceptions != own._retry_exceptions:
            options["retry_exceptions"] = self._retry_exceptions
        if self._task_options is not own._task_options:
            options["enable_task_events"] = self._task_options is None
        outputs = n if generator is None or generator[0] == GENERATOR_FIXED else 1
        return bind_actor_method(self._handle, self._name, outputs, args, kwargs, options)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        h = self._handle
        cw = context.global_worker()
        client = cw.actor_client(h._actor_id, h._class_name, h._address)
        if h._out_of_order:  # allow_out_of_order_execution (actor_client's flush)
            client.out_of_order = True
        limit = h._max_pending_calls
        if limit > 0 and cw.pending_actor_calls(h._actor_id) >= limit:
            raise PendingCallsLimitExceeded(
                f"The task {self._name} could not be submitted to {h!r} because more than "
                f"{limit} tasks are queued on the actor. This limit can be adjusted with the "
                "`max_pending_calls` actor option."
            )
        retries = self._max_task_retries
        group = self._group
        n, generator = self._num_returns, None
        if n < 0:  # a generator method (core/generators.py)
            n, generator = method_mode(n)
        refs = cw.submit_task(
            name=self._task_name or f"{h._class_name}.{self._name}",
            function_id=self._name.encode() if group is None else f"{self._name}\0{group}".encode(),
            function_blob=None,
            args=args,
            kwargs=kwargs,
            num_returns=n,
            shape={},
            max_retries=h._max_task_retries if retries is None else retries,
            retry_exceptions=self._retry_exceptions,
            actor_id=h._actor_id,
            generator=generator,
            actor_options=self._task_options,
        )
        if generator is not None and generator[0] != GENERATOR_FIXED:
            from .object_ref_generator import generator_result

            return generator_result(cw, refs, generator[0])
        if n == 1:
            return refs[0]
        if n == 0:
            return None
        return refs


def method_options(code: int, options: dict[str, Any]) -> int:
    """A method's table entry with `.options(num_returns=, _generator_backpressure_num_objects=)`."""
    num_returns, backpressure = options_of(code)
    num_returns = options.get("num_returns", num_returns)
    if num_returns is not None:
        check_num_returns(num_returns)
    backpressure = options.get("_generator_backpressure_num_objects", backpressure)
    check_backpressure(backpressure)
    is_generator = code < 0  # (a generator method's code: method_code)
    return method_code(*generator_mode(is_generator, num_returns, backpressure))
