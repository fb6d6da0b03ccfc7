"""`multiprocessing.Pool` on raylite actors: Ray's `ray.util.multiprocessing`.

    from raylite.util.multiprocessing import Pool

`TimeoutError` and `JoinableQueue` are the standard library's, re-exported as Ray does;
`AsyncResult` and `PoolTaskError` are in `.pool`, as in Ray.
"""

from multiprocessing import JoinableQueue, TimeoutError

from .pool import Pool

__all__ = ["JoinableQueue", "Pool", "TimeoutError"]
