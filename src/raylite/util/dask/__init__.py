"""Dask on raylite (Ray's `ray.util.dask`): a Dask scheduler whose graph nodes run as
tasks, intermediate results in the object store.

    import dask
    from raylite.util.dask import raylite_dask_get
    dask.compute(x, scheduler=raylite_dask_get)            # one call
    with dask.config.set(scheduler=raylite_dask_get): ...  # a block
    enable_dask_on_raylite()                               # from now on

`ray_dask_get` and `enable_dask_on_ray` are the same under Ray's names. Dask is
imported only when a graph runs (scheduler.py).
"""

from __future__ import annotations

from typing import Any


def raylite_dask_get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """Run the Dask graph `dsk` for `keys` on raylite (see scheduler.py)."""
    from .scheduler import raylite_dask_get as get

    return get(dsk, keys, **kwargs)


def enable_dask_on_raylite() -> Any:
    """Make raylite Dask's scheduler (the returned dask.config.set also works as a
    context manager, for a block only)."""
    import dask

    return dask.config.set(scheduler=raylite_dask_get)


ray_dask_get = raylite_dask_get
enable_dask_on_ray = enable_dask_on_raylite

__all__ = ["enable_dask_on_ray", "enable_dask_on_raylite", "ray_dask_get", "raylite_dask_get"]
