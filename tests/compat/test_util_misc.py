"""The smaller `ray.util` APIs: list_named_actors, get_node_ip_address, accelerator
names, inspect_serializability, as_completed and map_unordered."""

from __future__ import annotations

import io
import threading
import warnings

import pytest

from tests._engine import ray, strip_ansi, wait_for, wait_for_path

RAY_INIT = {"num_cpus": 2, "namespace": "misc"}


@ray.remote
class Named:
    def __init__(self, gate=None):
        if gate is not None:
            wait_for_path(gate)

    def ping(self):
        return "pong"


@ray.remote
def node_ip():
    return ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()


@ray.remote
def gated(x, gate=None):
    if gate is not None:
        wait_for_path(gate)
    return x


@ray.remote
def gated_pair(pair):
    x, gate = pair
    if gate is not None:
        wait_for_path(gate)
    return x


@pytest.fixture
def gate(tmp_path):
    path = tmp_path / "gate"
    yield str(path)
    path.touch()


# --- list_named_actors --------------------------------------------------------------------
def test_list_named_actors_in_this_namespace_and_all(ray_start, gate):
    here = Named.options(name="listed-here").remote()
    there = Named.options(name="listed-there", namespace="elsewhere").remote()
    unnamed = Named.remote()
    # Still in its __init__: a named actor is listed from its creation on.
    starting = Named.options(name="listed-starting").remote(gate)
    ray.get([here.ping.remote(), there.ping.remote(), unnamed.ping.remote()])

    names = ray.util.list_named_actors()
    assert all(isinstance(n, str) for n in names)
    assert {"listed-here", "listed-starting"} <= set(names)
    assert "listed-there" not in names

    everywhere = ray.util.list_named_actors(all_namespaces=True)
    assert {"name": "listed-here", "namespace": "misc"} in everywhere
    assert {"name": "listed-there", "namespace": "elsewhere"} in everywhere
    assert {"name": "listed-starting", "namespace": "misc"} in everywhere

    ray.kill(here)
    wait_for(lambda: "listed-here" not in ray.util.list_named_actors(), 30, "name gone")
    open(gate, "w").close()
    assert ray.get(starting.ping.remote()) == "pong"
    ray.kill(there)
    ray.kill(starting)


@pytest.mark.ray_init(num_cpus=2)
def test_list_named_actors_in_the_anonymous_namespace(ray_start):
    actor = Named.options(name="anonymous-listed").remote()
    ray.get(actor.ping.remote())
    namespace = ray.get_runtime_context().namespace
    assert isinstance(namespace, str)
    assert namespace  # a job without a namespace has an anonymous one
    assert "anonymous-listed" in ray.util.list_named_actors()
    entry = {"name": "anonymous-listed", "namespace": namespace}
    assert entry in ray.util.list_named_actors(all_namespaces=True)
    ray.kill(actor)


# --- get_node_ip_address ----------------------------------------------------------------------
def test_get_node_ip_address_is_this_nodes(ray_start):
    address = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    here = ray.get_runtime_context().get_node_id()
    assert ray.util.get_node_ip_address() == address[here]
    ip, node_id = ray.get(node_ip.remote())  # in a task: the node it runs on
    assert ip == address[node_id]


# --- accelerators -------------------------------------------------------------------------
def test_accelerator_names_are_rays():
    from importlib import import_module

    acc = import_module(f"{ray.__name__}.util.accelerators")
    assert acc.NVIDIA_TESLA_V100 == "V100"
    assert acc.NVIDIA_TESLA_T4 == "T4"
    assert acc.NVIDIA_A100 == "A100"
    assert acc.NVIDIA_H100 == "H100"
    assert acc.NVIDIA_L4 == "L4"
    assert acc.INTEL_GAUDI == "Intel-GAUDI"
    assert acc.AMD_INSTINCT_MI300x == "AMD-Instinct-MI300X-OAM"
    assert acc.AWS_NEURON_CORE == "aws-neuron-core"
    assert acc.GOOGLE_TPU_V4 == "TPU-V4"
    assert acc.APPLE_SILICON == "Apple-Silicon"
    assert ray.util.accelerators.NVIDIA_TESLA_A10G == "A10G"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert acc.NVIDIA_TESLA_A100 == "A100"
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    with pytest.raises(AttributeError):
        acc.NO_SUCH_ACCELERATOR  # noqa: B018


# --- inspect_serializability -----------------------------------------------------------------
LOCK = threading.Lock()


class HoldsALock:
    def __init__(self):
        self.lock = threading.Lock()
        self.number = 3


def test_inspect_serializability_of_a_serializable_object():
    out = io.StringIO()
    ok, failures = ray.util.inspect_serializability([1, "two"], print_file=out)
    assert ok is True
    assert failures == set()
    assert "Checking Serializability of [1, 'two']" in out.getvalue()
    assert "FAIL" not in out.getvalue()


def test_inspect_serializability_names_the_culprit():
    out = io.StringIO()
    ok, failures = ray.util.inspect_serializability(LOCK, name="lock", print_file=out)
    assert ok is False
    (failure,) = failures
    assert failure.obj is LOCK
    text = strip_ansi(out.getvalue())
    assert "!!! FAIL serialization" in text
    assert "was found to be non-serializable" in text


def test_inspect_serializability_walks_closures_and_members():
    def uses_the_lock():  # local: pickled by value, with the globals it reads
        return LOCK.locked()

    out = io.StringIO()
    ok, failures = ray.util.inspect_serializability(uses_the_lock, print_file=out)
    assert ok is False
    assert [f.obj for f in failures] == [LOCK]
    (failure,) = failures
    assert failure.path[-1] == "LOCK"
    assert failure.parent is uses_the_lock
    text = strip_ansi(out.getvalue())
    assert "Detected 1 global variables. Checking serializability..." in text
    assert "Serializing 'LOCK'" in text
    assert "FailTuple(LOCK [" in text

    holder = HoldsALock()
    ok, failures = ray.util.inspect_serializability(holder, print_file=io.StringIO())
    assert ok is False
    assert [f.path[-1] for f in failures] == ["lock"]
    assert [f.parent for f in failures] == [holder]


# --- as_completed, map_unordered --------------------------------------------------------------
def test_as_completed_yields_what_is_ready_first(ray_start, gate):
    refs = [gated.remote(0, gate)] + [gated.remote(i) for i in (1, 2, 3)]
    it = ray.util.as_completed(refs, chunk_size=1)
    assert sorted(next(it) for _ in range(3)) == [1, 2, 3]
    open(gate, "w").close()
    assert next(it) == 0
    assert list(it) == []


def test_as_completed_options(ray_start):
    refs = [gated.remote(i) for i in range(4)]
    got = list(ray.util.as_completed(refs, yield_obj_refs=True, timeout=60))
    assert sorted(got, key=refs.index) == refs
    assert sorted(ray.util.as_completed(refs)) == [0, 1, 2, 3]  # default chunk_size 10
    assert list(ray.util.as_completed([])) == []
    with pytest.raises(ValueError, match="chunk_size"):
        next(ray.util.as_completed(refs, chunk_size=0))
    with pytest.raises(ValueError, match="instead of `num_returns`"):
        next(ray.util.as_completed(refs, num_returns=2))


def test_map_unordered_holds_back_at_backpressure(ray_start, gate):
    taken = []

    def items():
        for i in range(5):
            taken.append(i)
            yield (i, gate) if i == 0 else (i, None)

    it = ray.util.map_unordered(gated_pair, items(), backpressure_size=2, chunk_size=1)
    # Two calls in flight, item 0 blocked: the first result is item 1's, and the items
    # were read no further than the two submitted.
    assert next(it) == 1
    assert taken == [0, 1]
    open(gate, "w").close()
    assert sorted(it) == [0, 2, 3, 4]


def test_map_unordered_options(ray_start):
    assert sorted(ray.util.map_unordered(gated, range(5), backpressure_size=None)) == [
        0,
        1,
        2,
        3,
        4,
    ]
    refs = list(ray.util.map_unordered(gated, range(3), yield_obj_refs=True))
    assert sorted(ray.get(refs)) == [0, 1, 2]
    with pytest.raises(ValueError, match="backpressure_size"):
        next(ray.util.map_unordered(gated, range(3), backpressure_size=0))
    with pytest.raises(ValueError, match="chunk_size"):
        next(ray.util.map_unordered(gated, range(3), chunk_size=0))
