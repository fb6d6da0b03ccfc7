"""How a task's or actor method's results come back: N returns, or a generator's stream.

Owns the generator modes (PushTask.generator on the wire: protocol.py re-exports
them), the check of num_returns and of the backpressure option, the mode a function
or method is submitted with (generator_mode), and the code a method has in its
class's method table (method_code, method_mode; options_of: the options it stands
for). Pure, and imports nothing of raylite: `@ray.remote` before `init()` reaches it
without loading the wire protocol, so driver_start can start the node while the
driver's modules load.
"""

from __future__ import annotations

import functools
import types
from typing import Any

# PushTask.generator: how the worker runs a generator function's body (0: not a
# generator task; the worker then returns what the function returns).
GENERATOR_FIXED = 1  # num_returns=N: the first N yields are the N returns
GENERATOR_STREAMING = 2  # each yield goes to the owner at once (GeneratorItem)
GENERATOR_DYNAMIC = 3  # as streaming; the one return lists the items' refs

# An actor method's entry in its class's method table (the head keeps it for named
# actors) is an int: a plain method's num_returns, or for a generator method
# -(mode * _CODE + n): mode a PushTask.generator value, n its num_returns (fixed) or
# its backpressure (streaming; 0: none).
_CODE = 1_000_000


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
        return 1, (GENERATOR_STREAMING, bp)
    if num_returns == "dynamic":
        return 1, (GENERATOR_DYNAMIC, -1)
    return num_returns, (GENERATOR_FIXED, -1)


# inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR: code flags of a generator function.
_GENERATOR_FLAGS = 0x20 | 0x200


def is_generator_function(fn: Any) -> bool:
    """inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn), the same
    way (through bound methods and partials, to a function's code), without importing
    inspect: @remote runs this before init(), whose node waits for it (~10 ms)."""
    while isinstance(fn, types.MethodType):
        fn = fn.__func__
    while isinstance(fn, functools.partial):
        fn = fn.func
    code = getattr(fn, "__code__", None)
    return isinstance(code, types.CodeType) and bool(code.co_flags & _GENERATOR_FLAGS)


def method_code(num_returns: int, generator: tuple[int, int] | None) -> int:
    """A method's entry in its class's method table (see _CODE), from what
    generator_mode says of it."""
    if generator is None:
        return num_returns
    mode, backpressure = generator
    n = num_returns if mode == GENERATOR_FIXED else max(backpressure, 0)
    return -(mode * _CODE + n)


def method_mode(code: int) -> tuple[int, tuple[int, int] | None]:
    """(num_returns, submit_task's `generator`) of a method table entry."""
    if code >= 0:
        return code, None
    mode, n = divmod(-code, _CODE)
    if mode == GENERATOR_FIXED:
        return n, (mode, -1)
    return 1, (mode, n if n > 0 else -1)


def options_of(code: int) -> tuple[Any, int | None]:
    """(num_returns, _generator_backpressure_num_objects) options that a method table
    entry stands for: generator_mode's inverse (backpressure None: none)."""
    n, generator = method_mode(code)
    if generator is None or generator[0] == GENERATOR_FIXED:
        return n, None
    if generator[0] == GENERATOR_DYNAMIC:
        return "dynamic", None
    return "streaming", generator[1] if generator[1] > 0 else None
