"""Ray 2.60's public names beyond the core calls: every exception class with its bases,
ObjectRef made from an id, ray.cloudpickle, and the actor options that raise Ray's
errors (max_pending_calls, a taken name) (issue 13)."""

from __future__ import annotations

import pytest

from tests._engine import exceptions, ray, raylite_only, wait_for, wait_for_path

RAY_INIT = {"num_cpus": 2}

# Ray 2.60's ray.exceptions classes, each with the bases an `except` clause may name.
RAY_EXCEPTIONS = {
    "ActorAlreadyExistsError": ("ValueError", "RayError"),
    "ActorDiedError": ("RayActorError",),
    "ActorHandleNotFoundError": ("ValueError", "RayError"),
    "ActorPlacementGroupRemoved": ("RayError",),
    "ActorUnavailableError": ("RayActorError",),
    "ActorUnschedulableError": ("RayError",),
    "AsyncioActorExit": ("RayError",),
    "AuthenticationError": ("RayError",),
    "CrossLanguageError": ("RayError",),
    "GetTimeoutError": ("RayError", "TimeoutError"),
    "LocalRayletDiedError": ("RayError",),
    "NodeDiedError": ("RayError",),
    "ObjectFetchTimedOutError": ("ObjectLostError",),
    "ObjectFreedError": ("ObjectLostError",),
    "ObjectLostError": ("RayError",),
    "ObjectReconstructionFailedError": ("ObjectLostError",),
    "ObjectRefStreamEndOfStreamError": ("RayError",),
    "ObjectStoreFullError": ("RayError",),
    "OufOfBandObjectRefSerializationException": ("RayError",),
    "OutOfDiskError": ("RayError",),
    "OutOfMemoryError": ("RayError",),
    "OwnerDiedError": ("ObjectLostError",),
    "PendingCallsLimitExceeded": ("RayError",),
    "PlasmaObjectNotAvailable": ("RayError",),
    "RayActorError": ("RayError",),
    "RayCgraphCapacityExceeded": ("RaySystemError",),
    "RayChannelError": ("RaySystemError",),
    "RayChannelTimeoutError": ("RayChannelError", "TimeoutError"),
    "RayDirectTransportError": ("RaySystemError",),
    "RayError": ("Exception",),
    "RaySystemError": ("RayError",),
    "RayTaskError": ("RayError",),
    "ReferenceCountingAssertionError": ("ObjectLostError", "AssertionError"),
    "RpcError": ("RayError",),
    "RuntimeEnvSetupError": ("RayError",),
    "StreamingGeneratorReplayInconsistentError": ("RaySystemError",),
    "TaskCancelledError": ("RayError",),
    "TaskPlacementGroupRemoved": ("RayError",),
    "TaskUnschedulableError": ("RayError",),
    "UnserializableException": ("RayError",),
    "UserCodeException": ("RayError",),
    "WorkerCrashedError": ("RayError",),
}


@pytest.mark.parametrize("name", sorted(RAY_EXCEPTIONS))
def test_every_ray_exception_name_exists_with_its_bases(name):
    cls = getattr(exceptions, name)
    names = {base.__name__ for base in cls.__mro__}
    for base in RAY_EXCEPTIONS[name]:
        assert base in names, f"{name} is not a {base}: {[c.__name__ for c in cls.__mro__]}"


def test_ray_cloudpickle_round_trips_a_closure():
    k = 5
    blob = ray.cloudpickle.dumps(lambda x: x + k)
    assert ray.cloudpickle.loads(blob)(1) == 6


def test_an_object_ref_from_its_binary_reads_the_value(ray_start):
    ref = ray.put({"a": 1})
    again = ray.ObjectRef(ref.binary())
    assert again == ref
    assert again.hex() == ref.hex()
    assert bytes.fromhex(ref.hex()) == ref.binary()
    assert ray.get(again) == {"a": 1}


def test_an_object_ref_from_a_task_result_id_reads_the_value(ray_start):
    @ray.remote
    def f():
        return 42

    ref = f.remote()
    assert ray.get(ray.ObjectRef(ref.binary())) == 42


def test_an_object_ref_needs_bytes_of_the_id_size(ray_start):
    size = len(ray.put(1).binary())
    with pytest.raises(ValueError, match="length"):
        ray.ObjectRef(b"abc")
    with pytest.raises(TypeError):
        ray.ObjectRef("ab" * size)


def test_nil_object_ref(ray_start):
    assert ray.ObjectRef.nil().is_nil()
    assert not ray.put(1).is_nil()


@raylite_only  # Ray 2.60 raises NotImplementedError from ObjectRef.from_hex
def test_from_hex_is_the_inverse_of_hex(ray_start):
    ref = ray.put([1, 2])
    assert ray.get(ray.ObjectRef.from_hex(ref.hex())) == [1, 2]


@raylite_only  # Ray waits forever (or to the timeout) for an id whose owner it cannot know
def test_an_id_nobody_here_knows_fails_at_get(ray_start):
    ref = ray.ObjectRef.from_random()
    with pytest.raises(exceptions.ObjectLostError, match="owner is unknown"):
        ray.get(ref, timeout=10)


@ray.remote
class Gate:
    def wait(self, path):
        wait_for_path(path)
        return "passed"


def test_max_pending_calls_raises_pending_calls_limit_exceeded(ray_start, tmp_path):
    gate = Gate.options(max_pending_calls=2, max_concurrency=4).remote()
    opened = tmp_path / "open"
    first = [gate.wait.remote(str(opened)), gate.wait.remote(str(opened))]
    with pytest.raises(exceptions.PendingCallsLimitExceeded, match="max_pending_calls"):
        gate.wait.remote(str(opened))
    opened.touch()
    assert ray.get(first, timeout=60) == ["passed", "passed"]

    # The limit counts calls not yet ended: once they end, calls go through again (Ray
    # counts an ended call off a moment after its value arrives).
    def call_again():
        try:
            return gate.wait.remote(str(opened))
        except exceptions.PendingCallsLimitExceeded:
            return None

    assert ray.get(wait_for(call_again, 30), timeout=60) == "passed"


def test_bad_max_pending_calls_is_rejected(ray_start):
    with pytest.raises(ValueError, match="max_pending_calls"):
        Gate.options(max_pending_calls=-2).remote()
    with pytest.raises(TypeError, match="max_pending_calls"):
        Gate.options(max_pending_calls=1.5).remote()


def test_max_pending_calls_zero_is_no_limit(ray_start, tmp_path):
    gate = Gate.options(max_pending_calls=0, max_concurrency=4).remote()
    opened = tmp_path / "open"
    calls = [gate.wait.remote(str(opened)) for _ in range(3)]
    opened.touch()
    assert ray.get(calls, timeout=60) == ["passed"] * 3


def test_a_taken_actor_name_raises_actor_already_exists_error(ray_start):
    first = Gate.options(name="api-names-taken").remote()
    try:
        with pytest.raises(exceptions.ActorAlreadyExistsError, match="api-names-taken"):
            Gate.options(name="api-names-taken").remote()
        with pytest.raises(ValueError):  # Ray's class is also a ValueError
            Gate.options(name="api-names-taken").remote()
    finally:
        ray.kill(first)


def test_an_actor_call_takes_its_name_option(ray_start):
    @ray.remote
    class Named:
        def m(self):
            return ray.get_runtime_context().get_task_name()

    actor = Named.remote()
    assert ray.get(actor.m.options(name="custom-call-name").remote()) == "custom-call-name"


def test_a_function_is_pickled_at_its_first_remote_call(ray_start):
    box = {"g": 3}

    @ray.remote
    def read():
        return box["g"]

    first = read.remote()
    box["g"] = 4  # too late: the definition (and what it closes over) went at .remote()
    assert ray.get(first) == 3
    assert ray.get(read.remote()) == 3


def test_an_actor_class_is_pickled_at_its_first_creation(ray_start):
    box = {"g": 3}

    @ray.remote
    class Reader:
        def read(self):
            return box["g"]

    actor = Reader.remote()
    box["g"] = 4
    assert ray.get(actor.read.remote()) == 3
