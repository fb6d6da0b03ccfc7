"""A segment mapped for zero-copy gets is freed once its refs and views are gone.

A process keeps one read-only mapping per object while any view of it lives
(object_store.Mappings); the owner tells its node manager that it maps a segment only
when it frees it (refs._on_mapped, lineage._free_segment), and a borrower pins it with
a link the node manager sees before it reuses the file (object_store). These tests check, with
real processes, that the store's file goes when the last ref goes, that the memory
under a live view is never handed to another object, and that nothing stays mapped
(or in /dev/shm) once the views are dropped too.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from tests._engine import ray, raylite_only, wait_for

pytestmark = [raylite_only, pytest.mark.timeout(120)]

N = 4 * 1024 * 1024  # 32 MB of float64: a store segment


def _store_dir() -> str:
    from raylite.util.state import store_stats

    return store_stats()["store_dir"]


def _segments() -> set[str]:
    """The object files in the store (not the freed files it keeps warm for reuse)."""
    return {n for n in os.listdir(_store_dir()) if not n.startswith(".")}


def _mapped_here(oid_hex: str) -> list[str]:
    """This process's read-only mappings of the segment (not the writable one a
    process keeps of a file it filled, to fill it again when it is recycled)."""
    with open("/proc/self/maps") as maps:
        return [line.strip() for line in maps if oid_hex in line and " r--s " in line]


@ray.remote
class Holder:
    def hold(self, refs):
        self.view = ray.get(refs[0])
        return float(self.view[7])

    def extremes(self):
        return float(self.view.min()), float(self.view.max())

    def drop(self):
        del self.view
        gc.collect()
        return True

    def mapped(self, oid_hex):
        return _mapped_here(oid_hex)

    def pid(self):
        return os.getpid()


@pytest.fixture
def engine(no_engine):
    ray.init(num_cpus=2)
    yield
    ray.shutdown()


def test_views_then_ref_dropped_frees_the_segment(engine):
    before = _segments()
    ref = ray.put(np.arange(N, dtype=np.float64))
    oid = ref.hex()
    views = [ray.get(ref) for _ in range(3)]
    assert oid in _segments()
    assert len(_mapped_here(oid)) == 1
    del views
    gc.collect()
    # No view lives: the object is not mapped for its node (which may recycle its file),
    # though the process may keep the mapping idle for a later object written into the
    # same file (object_store: ObjectStore._idle).
    assert not _live_store().mapped(bytes.fromhex(oid))
    assert len(_mapped_here(oid)) <= 1
    del ref
    gc.collect()
    wait_for(lambda: _segments() == before, timeout=20, message=lambda: f"{_segments() - before}")
    assert _mapped_here(oid) == []  # (an idle mapping names the file's next name)


def _live_store():
    from raylite.core import context

    worker = context.live_worker()
    assert worker is not None
    return worker.store


def test_a_live_view_keeps_its_memory_after_the_ref_is_freed(engine):
    before = _segments()
    ref = ray.put(np.full(N, 7.0))
    oid = ref.hex()
    view = ray.get(ref)
    del ref
    gc.collect()
    wait_for(lambda: oid not in _segments(), timeout=20, message=f"{oid} freed by its owner")
    # New objects of the same size must not be written into the memory under `view`
    # (a freed segment nobody maps is recycled for the next put of its size).
    others = [ray.put(np.full(N, float(i))) for i in range(3)]
    assert (float(view.min()), float(view.max())) == (7.0, 7.0)
    assert [float(ray.get(o)[5]) for o in others] == [0.0, 1.0, 2.0]
    del others
    assert _mapped_here(oid), "the view's mapping is still there (its file is unlinked)"
    del view
    gc.collect()
    assert _mapped_here(oid) == []
    wait_for(lambda: _segments() == before, timeout=20, message=lambda: f"{_segments() - before}")


def test_a_borrower_view_outliving_the_ref(engine):
    before = _segments()
    ref = ray.put(np.full(N, 3.0))
    oid = ref.hex()
    holder = Holder.remote()
    assert ray.get(holder.hold.remote([ref])) == 3.0
    assert len(ray.get(holder.mapped.remote(oid))) == 1
    del ref
    gc.collect()
    wait_for(lambda: oid not in _segments(), timeout=20, message=f"{oid} freed by its owner")
    others = [ray.put(np.full(N, 9.0)) for _ in range(2)]
    assert ray.get(holder.extremes.remote()) == (3.0, 3.0)
    del others
    assert ray.get(holder.drop.remote())
    assert ray.get(holder.mapped.remote(oid)) == []
    wait_for(lambda: _segments() == before, timeout=20, message=lambda: f"{_segments() - before}")


def test_a_dead_borrowers_pins_go_with_it(engine):
    """A borrower pins what it maps (a link in the store's .pins-<pid>: object_store);
    when it dies with views alive, its node removes them, so the memory comes back."""
    before = _segments()
    ref = ray.put(np.full(N, 5.0))
    oid = ref.hex()
    holder = Holder.remote()
    assert ray.get(holder.hold.remote([ref])) == 5.0
    pins = os.path.join(_store_dir(), f".pins-{ray.get(holder.pid.remote())}")
    assert [name.split(".")[0] for name in os.listdir(pins)] == [oid]
    ray.kill(holder)
    wait_for(lambda: not os.path.exists(pins), timeout=20, message=f"{pins} removed")
    del ref
    gc.collect()
    wait_for(lambda: _segments() == before, timeout=20, message=lambda: f"{_segments() - before}")


def test_an_idle_workers_mapping_of_a_file_spilled_since_goes(no_engine):
    """A worker that read a large object keeps the file mapped once the views are gone
    (idle: for the next object in that file). When the node spills the object, the
    worker lets go of the mapping by itself (its release loop's tidy), though it runs
    nothing more: the spill frees the memory."""
    from raylite.util.state import store_stats

    ray.init(num_cpus=2, object_store_memory=80 << 20)  # two of these objects, not three
    try:
        ref = ray.put(np.full(N, 4.0))
        oid = ref.hex()
        holder = Holder.remote()
        assert ray.get(holder.hold.remote([ref])) == 4.0
        assert ray.get(holder.drop.remote())
        assert len(ray.get(holder.mapped.remote(oid))) == 1  # idle: still mapped
        others = [ray.put(np.full(N, float(i))) for i in range(2)]  # the oldest goes to disk
        wait_for(lambda: store_stats()["spilled_objects"] >= 1, timeout=20, message="a spill")
        assert not os.path.exists(os.path.join(_store_dir(), oid))
        wait_for(
            lambda: ray.get(holder.mapped.remote(oid)) == [],
            timeout=10,
            message="the idle mapping of the spilled file closed",
        )
        assert float(ray.get(ref)[9]) == 4.0  # read back from disk
        del others
    finally:
        ray.shutdown()


@ray.remote
class Reader:
    def read(self, refs):
        """The array's first and last values, and the page faults getting and reading
        all of it took here."""
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        value = ray.get(refs[0])
        total = float(value.sum())
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        return float(value[0]), total / len(value), faults


def test_a_borrower_reads_the_next_object_in_a_recycled_file_through_the_same_mapping(engine):
    """A freed large segment's file is recycled for the next put of its size; a reader
    that read the first object kept its mapping idle and reads the second through it:
    the second's values, and none of the page faults a fresh mapping takes."""
    reader = Reader.remote()
    # Its views are numpy arrays over the kept mapping: kept once numpy is loaded there.
    assert ray.get(reader.read.remote([ray.put(np.ones(10))]))[:2] == (1.0, 1.0)
    ref = ray.put(np.full(N, 1.0))
    first = ray.get(reader.read.remote([ref]))
    assert first[:2] == (1.0, 1.0)
    oid = ref.hex()
    del ref
    gc.collect()
    wait_for(lambda: oid not in _segments(), timeout=20, message=f"{oid} freed by its owner")
    wait_for(
        lambda: any(n.startswith(".warm-") for n in os.listdir(_store_dir())),
        timeout=20,
        message="its file kept warm",
    )
    ref = ray.put(np.full(N, 2.0))  # into that file
    second = ray.get(reader.read.remote([ref]))
    assert second[:2] == (2.0, 2.0)
    pages = N * 8 // os.sysconf("SC_PAGESIZE")
    # A fresh mapping takes a fault per few pages (the kernel maps up to 16 a fault).
    assert first[2] > pages // 32
    assert second[2] < pages // 128, (first, second)


@ray.remote
class Maker:
    def make(self, value):
        return np.full(N, value)


def test_a_task_return_outlives_the_worker_that_wrote_it(engine):
    """A task's return is its caller's object: the worker that wrote it dying (an actor
    killed) frees nothing, and a later put of its size is not written into the memory
    under the caller's view. It was: the node booked the segment to the writer, freed
    it with the writer, and recycled its file for the next put."""
    maker = Maker.remote()
    ref = maker.make.remote(1.0)
    view = ray.get(ref)
    ray.kill(maker)
    # The node frees a dead worker's objects before the actor's death is told.
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(maker.make.remote(2.0), timeout=20)
    assert ref.hex() in _segments()
    others = [ray.put(np.full(N, 9.0)) for _ in range(3)]
    assert (float(view.min()), float(view.max())) == (1.0, 1.0)
    assert float(ray.get(ref)[0]) == 1.0
    del others


AFTER_SHUTDOWN = """
import sys
import numpy as np
import raylite as ray

ray.init(address=sys.argv[1])

@ray.remote
def make():
    return np.full(1 << 20, 2.0)  # 8 MB: a segment its caller owns

view = ray.get(make.remote())
ray.shutdown()  # the node frees what this driver owned; this view lives on
ray.init(address=sys.argv[1])  # the same node: another driver's puts of its size
refs = [ray.put(np.full(1 << 20, 9.0)) for _ in range(3)]
print("SUM", float(view.sum()), flush=True)
ray.shutdown()
"""


@pytest.mark.parametrize("warm_files", ["0", "32"])
def test_a_drivers_view_outlives_its_shutdown_on_a_cluster(tmp_path, warm_files, no_engine):
    """A driver's own views go untold (an owner's gets send nothing). When it leaves a
    cluster's node, the node frees its objects but may not reuse (warm files: 32) or cut
    (none kept: 0) the memory under views the process keeps after shutdown()."""

    from tests._head import blocking_head, run_driver

    env = {**os.environ, "RAYLITE_TOKEN": "views", "TMPDIR": str(tmp_path)}
    env["RAYLITE_WARM_MAX_FILES"] = warm_files
    env.pop("RAYLITE_ADDRESS", None)
    with blocking_head(env, num_cpus=1) as address:
        out = run_driver(AFTER_SHUTDOWN, address, env=env)
    assert "SUM 2097152.0" in out, out


DYING_CALLER = """
import os, sys, time
import numpy as np
import raylite as ray

ray.init(address=sys.argv[1], namespace="returns")


@ray.remote
class Slow:  # detached: the caller's death does not end it
    def make(self, tmp):
        open(os.path.join(tmp, "started"), "w").close()
        while not os.path.exists(os.path.join(tmp, "gate")):
            time.sleep(0.01)
        return np.ones(4_000_000)  # 32 MB, in the store, its caller's

    def stream(self, tmp):
        yield self.make(tmp)
        yield np.ones(4_000_000)


slow = Slow.options(name="slow", lifetime="detached").remote()
if sys.argv[3] == "return":
    ref = slow.make.remote(sys.argv[2])
elif sys.argv[3] == "stream":
    ref = slow.stream.options(num_returns="streaming").remote(sys.argv[2])
else:  # each item sent as a request, answered once the caller may take more
    ref = slow.stream.options(
        num_returns="streaming", _generator_backpressure_num_objects=1
    ).remote(sys.argv[2])
time.sleep(120)  # killed while the call runs
"""

STORE_EMPTIES = """
import sys, time
import raylite as ray
from raylite.util.state import store_stats

ray.init(address=sys.argv[1], namespace="returns")
deadline = time.monotonic() + 20
while store_stats()["num_objects"] and time.monotonic() < deadline:
    time.sleep(0.05)
print("LEFT", store_stats()["num_objects"], flush=True)
ray.kill(ray.get_actor("slow"))
ray.shutdown()
"""


@pytest.mark.parametrize("kind", ["return", "stream", "backpressure"])
def test_a_return_whose_caller_died_while_it_ran_is_freed(tmp_path, kind, no_engine):
    """A detached actor's call outlives its caller (a driver killed while it runs):
    its return, stored for the dead caller, is freed by the node once the worker finds
    it cannot reply (DropReturn), where nobody else would free it; so are a stream's
    items, sent plain or as requests (backpressure). Before, the segment stayed booked
    to the dead caller until the node ended."""
    import signal
    import subprocess
    import sys

    from tests._head import blocking_head, run_driver

    env = {**os.environ, "RAYLITE_TOKEN": "returns", "TMPDIR": str(tmp_path)}
    env.pop("RAYLITE_ADDRESS", None)
    with blocking_head(env, num_cpus=2) as address:
        caller = subprocess.Popen(
            [sys.executable, "-c", DYING_CALLER, address, str(tmp_path), kind], env=env
        )
        try:
            wait_for(lambda: (tmp_path / "started").exists(), timeout=60, message="the call")
        finally:
            caller.send_signal(signal.SIGKILL)
            caller.wait(30)
        (tmp_path / "gate").touch()
        out = run_driver(STORE_EMPTIES, address, env=env)
    assert "LEFT 0" in out, out
