"""A progress bar while waiting on many refs: `progress(refs)` is `get(refs)` with a bar.

    progress(refs) ──wait(timeout=interval), repeatedly──▶ bar += newly ready ──▶ get(refs)

The bar is tqdm's: `tqdm.auto` draws a widget in Jupyter (with ipywidgets) and a text
bar in a terminal or into any stream given as `file`. tqdm is a dependency because it
is small, pure Python, well kept, and solves the part that is easy to get wrong
(terminal width, rate estimates, notebooks); it is imported only when a bar is drawn.
"""

from __future__ import annotations

import time
from typing import Any

from ..config import CONFIG
from ..object_ref import ObjectRef


def progress(
    object_refs: Any,
    *,
    desc: str | None = None,
    timeout: float | None = None,
    file: Any = None,
    **tqdm_options: Any,
) -> Any:
    """The values of `object_refs` (one ref or a list), as `get()` returns them, showing
    how many are ready meanwhile. `timeout` bounds the whole wait (GetTimeoutError);
    `desc`, `file` and other keywords go to tqdm (e.g. `unit="task"`, `disable=True`).

        results = raylite.util.progress([f.remote(i) for i in range(1000)], desc="f")
    """
    from .. import api

    single = isinstance(object_refs, ObjectRef)
    refs = [object_refs] if single else list(object_refs)
    for r in refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"progress() expects ObjectRefs, got {type(r).__name__}")
    poll_s = CONFIG.progress_poll_s  # how often the bar moves while nothing finishes
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list({r.hex(): r for r in refs}.values())  # wait() wants distinct refs
    with _bar(len(pending), desc, file, tqdm_options) as bar:
        while pending:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break  # get() below raises GetTimeoutError
            step = poll_s if left is None else min(poll_s, left)
            ready, pending = api.wait(pending, num_returns=len(pending), timeout=step)
            if ready:
                bar.update(len(ready))
    left = None if deadline is None else max(deadline - time.monotonic(), 0)
    values = api.get(refs, timeout=left)
    return values[0] if single else values


def _bar(total: int, desc: str | None, file: Any, options: dict[str, Any]) -> Any:
    from tqdm.auto import tqdm

    kwargs: dict[str, Any] = {"total": total, "desc": desc, "unit": "obj", **options}
    if file is not None:
        kwargs["file"] = file
    return tqdm(**kwargs)
