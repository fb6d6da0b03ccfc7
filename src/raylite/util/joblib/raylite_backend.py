"""joblib's parallel backend on raylite: each batch of calls joblib makes is a task.

Owns RayliteBackend (joblib's ParallelBackendBase with its auto-batching): the
executor its batches go through (util/executor.py: at most n_jobs in flight), the
large numpy arrays of a Parallel call (put in the store once, whatever the number of
batches that use them), and aborting (cancel what waits or runs when a call failed).
Not joblib's batching policy (AutoBatchingMixin), not the tasks.

    submit(batch) ─▶ pickled, each array over max_nbytes (joblib's, 1M) swapped for a slot
                     (its ref, put once per Parallel call) ─▶ a task (_run_batch)
    worker: the refs arrive as values (zero-copy, read-only: as joblib's memmaps),
            the batch is unpickled with the slots filled, and run
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import cloudpickle
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase

from ... import api
from ..executor import Executor


def _run_batch(payload: bytes, copy: bool, *arrays: Any) -> Any:
    """In a worker: the batch, its large arrays put back (copies if `copy`), run."""
    if copy:
        arrays = tuple(a.copy() for a in arrays)
    unpickler = pickle.Unpickler(io.BytesIO(payload))
    unpickler.persistent_load = lambda slot: arrays[slot]  # type: ignore[method-assign]
    return unpickler.load()()


def _nbytes(value: Any) -> float:
    """joblib's max_nbytes ("1M", an int, None: never) in bytes."""
    if value is None:
        return float("inf")
    if isinstance(value, str):
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        text = value.strip().upper()
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    return float(value)


class _ArraysToRefs(cloudpickle.Pickler):
    """Pickles a batch with each large numpy array as a slot of its ref."""

    def __init__(
        self, file: io.BytesIO, refs: dict[int, tuple[Any, Any]], slots: list[Any], large: float
    ) -> None:
        super().__init__(file, protocol=5)
        self.refs = refs  # id(array) -> (array, ref), for the whole Parallel call
        self.slots = slots  # this batch's refs, in slot order
        self.large = large

    def persistent_id(self, obj: Any) -> Any:
        if type(obj).__name__ != "ndarray" or getattr(obj, "nbytes", 0) < self.large:
            return None
        held = self.refs.get(id(obj))
        if held is None or held[0] is not obj:
            held = self.refs[id(obj)] = (obj, api.put(obj))
        self.slots.append(held[1])
        return len(self.slots) - 1


class RayliteBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's backend for raylite. `ray_remote_args` (here or in
    `parallel_config(..., ray_remote_args=...)`) go to every task."""

    supports_retrieve_callback = True
    supports_timeout = True
    default_n_jobs = -1

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **kwargs
        )
        self.ray_remote_args = ray_remote_args or {}
        self._executor: Executor | None = None
        self._refs: dict[int, tuple[Any, Any]] = {}
        self._futures: list[Any] = []
        self._large = float(1 << 20)
        self._copy = False

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            if not api.is_initialized():
                api.init()
            cpus = int(api.cluster_resources().get("CPU", 1))
            return max(cpus + 1 + n_jobs, 1)
        return n_jobs

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **backend_kwargs: Any,
    ) -> int:
        self._large = _nbytes(backend_kwargs.pop("max_nbytes", "1M"))
        mode = backend_kwargs.pop("mmap_mode", "r")
        if mode not in ("r", "c", None):
            raise ValueError(
                f"mmap_mode={mode!r}: the raylite backend shares large arrays read-only "
                "(mmap_mode='r', or 'c' for a private writable copy in each call)."
            )
        self._copy = mode == "c"
        # Where and how joblib's own pools would make memmaps and processes: raylite
        # makes neither (its store holds the arrays, its workers run the calls).
        for key in ("temp_folder", "verbose", "context", "prefer"):
            backend_kwargs.pop(key, None)
        if backend_kwargs:
            raise TypeError(
                f"The raylite joblib backend takes no {', '.join(sorted(backend_kwargs))} "
                "(it takes ray_remote_args)."
            )
        if require == "sharedmem":
            raise ValueError("The raylite backend runs calls in other processes: no sharedmem.")
        if not api.is_initialized():
            api.init()
        n_jobs = self.effective_n_jobs(n_jobs)
        if ray_remote_args is not None:
            self.ray_remote_args = ray_remote_args
        self.parallel = parallel
        self._executor = Executor(max_workers=n_jobs, **self.ray_remote_args)
        return n_jobs

    def submit(self, func: Any, callback: Any = None) -> Any:
        assert self._executor is not None, "configure() first"
        buf = io.BytesIO()
        slots: list[Any] = []
        _ArraysToRefs(buf, self._refs, slots, self._large).dump(func)
        future = self._executor.submit(_run_batch, buf.getvalue(), self._copy, *slots)
        self._futures.append(future)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Any) -> Any:
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: cancel the batches that wait or run."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        for future in self._futures:
            future.cancel()  # a running one's task is cancelled
        self._futures = []
        if ensure_ready:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)

    def terminate(self) -> None:
        """The Parallel call ended: its arrays may leave the store."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self._refs.clear()
        self._futures = []
        self.reset_batch_stats()
