"""ActorClass, ActorHandle, and actor method calls."""

from __future__ import annotations

import inspect
from typing import Any

from . import protocol as P
from .core import context
from .core.generators import method_code, method_mode
from .core.lifecycle import ALIVE
from .object_ref import new_id
from .object_ref_generator import generator_result
from .remote_function import (
    check_backpressure,
    check_num_returns,
    generator_mode,
    is_generator_function,
    resource_shape,
    strategy_of,
    validate_options,
)
from .serialization import dumps_function


class ActorExitRequest(SystemExit):
    """Raised by exit_actor(); the worker ends the actor after the current call."""


def exit_actor() -> None:
    """End the current actor from inside one of its methods, as `ray.actor.exit_actor`."""
    cw = context._global
    if cw is None or cw.current_actor_id is None:
        raise TypeError("exit_actor() must be called from inside an actor method.")
    raise ActorExitRequest(0)


def method(*args: Any, **kwargs: Any) -> Any:
    """`@method(num_returns=N)` on an actor method, as `ray.method`."""
    if args:
        raise TypeError("Use @raylite.method(num_returns=...) with keyword arguments only.")
    for key in kwargs:
        if key not in (
            "num_returns",
            "concurrency_group",
            "max_task_retries",
            "retry_exceptions",
            "_generator_backpressure_num_objects",
        ):
            raise ValueError(f"Invalid option {key!r} for @method.")

    def decorate(fn: Any) -> Any:
        n = kwargs.get("num_returns")
        if n not in (None, "streaming", "dynamic") and (
            isinstance(n, bool) or not isinstance(n, int) or n < 0
        ):
            raise ValueError(f"num_returns must be an int >= 0, got {n!r}")
        backpressure = kwargs.get("_generator_backpressure_num_objects")
        check_backpressure(backpressure)
        # Its method table entry (core/generators.py: a generator method's is a code).
        fn.__raylite_num_returns__ = method_code(
            *generator_mode(is_generator_function(fn), n, backpressure)
        )
        return fn

    return decorate


def _method_table(cls: type) -> dict[str, int]:
    table = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name != "__call__":
            continue
        if callable(member):
            code = getattr(member, "__raylite_num_returns__", None)
            if code is None:
                code = method_code(*generator_mode(is_generator_function(member), None, None))
            table[name] = code
    return table


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
        if any(
            inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
            for _, m in inspect.getmembers(cls)
        ):
            self._async = True
        else:
            self._async = False

    @staticmethod
    def _check(options: dict[str, Any]) -> None:
        for key in ("max_restarts", "max_task_retries"):
            v = options.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < -1):
                raise ValueError(f"{key} must be an int >= -1 (-1: unlimited), got {v!r}")
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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Actors cannot be instantiated directly. Instead of "
            f"'{self._cls.__name__}()', use '{self._cls.__name__}.remote()'."
        )

    def _pickled(self) -> bytes:
        if self._blob is None:
            self._blob = dumps_function(self._cls)
        return self._blob

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._create(args, kwargs, self._options)

    def options(self, **options: Any) -> _ActorOptions:
        validate_options(options, "actor")
        merged = {**self._options, **options}
        self._check(merged)
        return _ActorOptions(self, merged)

    def _create(self, args: tuple, kwargs: dict, options: dict[str, Any]) -> ActorHandle:
        cw = context.global_worker()
        # Ray's default: an actor needs no CPU while it runs unless asked for.
        shape = resource_shape(options, 0)
        actor_id, address = cw.create_actor(
            class_name=self._cls.__name__,
            function_id=self._class_id,
            function_blob=self._pickled,
            args=args,
            kwargs=kwargs,
            shape=shape,
            name=options.get("name"),
            namespace=options.get("namespace"),
            methods=self._methods,
            get_if_exists=bool(options.get("get_if_exists")),
            strategy=strategy_of(options),
            actor_options={
                "max_concurrency": options.get("max_concurrency"),
                "max_restarts": options.get("max_restarts") or 0,
                "max_task_retries": options.get("max_task_retries") or 0,
                "detached": options.get("lifetime") == "detached",
            },
        )
        return ActorHandle(
            actor_id,
            self._cls.__name__,
            self._methods,
            address,
            options.get("max_task_retries") or 0,
        )

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Ray DAGs (.bind) are not supported by raylite.")


class _ActorOptions:
    def __init__(self, actor_class: ActorClass, options: dict[str, Any]) -> None:
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._actor_class._create(args, kwargs, self._options)


class ActorHandle:
    """A reference to an actor; pass it to tasks and other actors freely."""

    def __init__(
        self,
        actor_id: bytes,
        class_name: str,
        methods: dict[str, int],
        address: str | None,
        max_task_retries: int = 0,
    ) -> None:
        self._max_task_retries = max_task_retries
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods
        self._address = address

    def __getattr__(self, name: str) -> ActorMethod:
        methods = self.__dict__.get("_methods")
        if methods is None or name not in methods:
            raise AttributeError(
                f"'{self.__dict__.get('_class_name', 'Actor')}' actor has no method '{name}'"
            )
        return ActorMethod(self, name, methods[name])

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
            client = cw.actors.get(self._actor_id)
            # Only a constructed actor's address is handed on; otherwise the
            # receiver asks the head, which answers once the actor is ALIVE.
            address = client.address if client is not None and client.state is ALIVE else None
        return (
            _rebuild_handle,
            (self._actor_id, self._class_name, self._methods, address, self._max_task_retries),
        )


def _rebuild_handle(
    actor_id: bytes,
    class_name: str,
    methods: dict[str, int],
    address: str | None,
    max_task_retries: int = 0,
) -> ActorHandle:
    return ActorHandle(actor_id, class_name, methods, address, max_task_retries)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, num_returns: int) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

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
        code = self._num_returns
        if "num_returns" in options or "_generator_backpressure_num_objects" in options:
            code = method_options(code, options)
        return ActorMethod(self._handle, self._name, code)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        h = self._handle
        cw = context.global_worker()
        cw.actor_client(h._actor_id, h._class_name, h._address)
        n, generator = self._num_returns, None
        if n < 0:  # a generator method (core/generators.py)
            n, generator = method_mode(n)
        refs = cw.submit_task(
            name=f"{h._class_name}.{self._name}",
            function_id=self._name.encode(),
            function_blob=None,
            args=args,
            kwargs=kwargs,
            num_returns=n,
            shape={},
            max_retries=h._max_task_retries,
            retry_exceptions=False,
            actor_id=h._actor_id,
            generator=generator,
        )
        if generator is not None and generator[0] != P.GENERATOR_FIXED:
            return generator_result(cw, refs, generator[0])
        if n == 1:
            return refs[0]
        if n == 0:
            return None
        return refs


def method_options(code: int, options: dict[str, Any]) -> int:
    """A method's table entry with `.options(num_returns=, _generator_backpressure_num_objects=)`."""
    n, generator = method_mode(code)
    num_returns: Any = n
    backpressure = None
    if generator is not None and generator[0] == P.GENERATOR_STREAMING:
        num_returns, backpressure = "streaming", generator[1]
    elif generator is not None and generator[0] == P.GENERATOR_DYNAMIC:
        num_returns = "dynamic"
    num_returns = options.get("num_returns", num_returns)
    if num_returns is not None:
        check_num_returns(num_returns)
    backpressure = options.get("_generator_backpressure_num_objects", backpressure)
    check_backpressure(backpressure)
    return method_code(*generator_mode(generator is not None, num_returns, backpressure))
