"""as_completed and map_unordered: results as they finish (Ray's `ray.util` helpers).

Owns these two generators only; they are loops over the public `wait` and `get`, and
start nothing of their own.

    as_completed(refs) ──wait(num_returns=chunk_size)──▶ get(ready) ──▶ yield, repeat
    map_unordered(fn, items) ──fn.remote(item)...── at backpressure_size in flight: one
                                                    batch as above ──▶ ... as_completed

Behaviour follows Ray 2.60's (alpha there): both are generators, so argument errors
(`chunk_size < 1`, `backpressure_size <= 0`, a `num_returns` keyword) are raised on the
first `next()`. Other keywords go to `wait()` (`timeout`, `fetch_local`); a `timeout`
only bounds each wait for a batch, it never raises. `yield_obj_refs=True` yields the
ready refs instead of their values. Within a batch the order is submission order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import raylite

# As Ray's: a batch of 10 per wait, 100 tasks in flight.
DEFAULT_CHUNK_SIZE = 10
DEFAULT_BACKPRESSURE_SIZE = 100


def _one_batch(
    refs: Sequence[Any], chunk_size: int, yield_obj_refs: bool, wait_options: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    """(the values, or refs, of up to chunk_size ready refs; the refs not ready)."""
    ready, rest = raylite.wait(list(refs), num_returns=min(chunk_size, len(refs)), **wait_options)
    return (ready if yield_obj_refs else raylite.get(ready)), rest


def _check(chunk_size: int, wait_options: dict[str, Any]) -> None:
    if chunk_size < 1:
        raise ValueError("`chunk_size` must be >= 1")
    if "num_returns" in wait_options:
        raise ValueError("Use the `chunk_size` argument instead of `num_returns`.")


def as_completed(
    refs: Sequence[Any],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    **kwargs: Any,
) -> Iterator[Any]:
    """Yield the values of `refs` as they become ready, `chunk_size` at a time.

    Arguments:
        refs: the refs to wait for.
        chunk_size: how many ready refs one `wait` asks for (its `num_returns`).
        yield_obj_refs: yield the ready refs rather than their values.
        **kwargs: more options of `wait` (`timeout`, `fetch_local`).
    """
    _check(chunk_size, kwargs)
    pending = list(refs)
    while pending:
        results, pending = _one_batch(pending, chunk_size, yield_obj_refs, kwargs)
        yield from results


def map_unordered(
    fn: Any,
    items: Iterable[Any],
    *,
    backpressure_size: int | None = DEFAULT_BACKPRESSURE_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    **kwargs: Any,
) -> Iterator[Any]:
    """`fn.remote(item)` for every item, yielding results as they finish.

    Arguments:
        fn: a remote function.
        items: its arguments, one call each.
        backpressure_size: how many calls may be in flight before a batch is taken
            (None: no limit).
        chunk_size: how many ready results one `wait` asks for.
        yield_obj_refs: yield the ready refs rather than their values.
        **kwargs: more options of `wait` (`timeout`, `fetch_local`).
    """
    if backpressure_size is not None and backpressure_size <= 0:
        raise ValueError("backpressure_size must be positive.")
    _check(chunk_size, kwargs)
    limit = float("inf") if backpressure_size is None else backpressure_size
    pending: list[Any] = []
    for item in items:
        pending.append(fn.remote(item))
        if len(pending) >= limit:
            results, pending = _one_batch(pending, chunk_size, yield_obj_refs, kwargs)
            yield from results
    yield from as_completed(pending, chunk_size=chunk_size, yield_obj_refs=yield_obj_refs, **kwargs)
