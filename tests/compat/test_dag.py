"""Ray DAGs: f.bind, Actor.bind, method.bind, InputNode, MultiOutputNode, execute (issue 13).

Ray 2.60 warns that DAGNode.execute() is deprecated (RayDeprecationWarning); raylite
does not deprecate it, so these tests only silence that warning.
"""

from __future__ import annotations

import dataclasses
import types
import warnings

import pytest

from tests._engine import AGAINST_RAY, ray, raylite_only

if AGAINST_RAY:
    import ray.dag as dag_api
else:
    import raylite.dag as dag_api  # type: ignore[no-redef]

InputNode = dag_api.InputNode
MultiOutputNode = dag_api.MultiOutputNode

RAY_INIT = {"num_cpus": 2}

pytestmark = pytest.mark.filterwarnings("ignore:DAGNode.execute:DeprecationWarning")


@ray.remote
class Log:
    """Records which steps ran, to count them."""

    def __init__(self):
        self.steps = []

    def record(self, name):
        self.steps.append(name)

    def steps_run(self):
        return sorted(self.steps)


@ray.remote
def step(log, name, *inputs):
    ray.get(log.record.remote(name))
    return f"{name}({','.join(inputs)})"


@ray.remote
def add(a, b):
    return a + b


@ray.remote
def echo(x):
    return x


@ray.remote
def type_name(x):
    return type(x).__name__


@ray.remote
class Accumulator:
    def __init__(self, start):
        self.value = start

    def inc(self, x):
        self.value += x
        return self.value

    def get(self):
        return self.value

    @ray.method(num_returns=2)
    def pair(self, x):
        return self.value, x


@dataclasses.dataclass
class Holder:
    item: object


@ray.remote
def resolve_nested(value):
    """What a task sees for nodes nested in its argument: refs, not values."""
    if isinstance(value, Holder):
        return ["Holder", type(value.item).__name__, ray.get(value.item)]
    if isinstance(value, dict):
        return {k: [type(v).__name__, ray.get(v)] for k, v in value.items()}
    return [[type(v).__name__, ray.get(v)] for v in value]


# -- functions ----------------------------------------------------------------------


def test_a_function_dag_runs_on_execute_and_returns_a_ref(ray_start):
    node = add.bind(add.bind(1, 2), 10)
    ref = node.execute()
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == 13
    assert ray.get(node.execute()) == 13  # a DAG runs again on each execute()


def test_a_node_used_twice_runs_once_per_execute(ray_start):
    log = Log.remote()
    a = step.bind(log, "a")
    b = step.bind(log, "b", a)
    c = step.bind(log, "c", a)
    dag = step.bind(log, "d", b, c)
    assert ray.get(dag.execute()) == "d(b(a()),c(a()))"
    assert ray.get(log.steps_run.remote()) == ["a", "b", "c", "d"]
    assert ray.get(dag.execute()) == "d(b(a()),c(a()))"
    assert ray.get(log.steps_run.remote()) == ["a", "a", "b", "b", "c", "c", "d", "d"]


def test_nothing_runs_before_execute(ray_start):
    log = Log.remote()
    dag = step.bind(log, "b", step.bind(log, "a"))
    assert ray.get(log.steps_run.remote()) == []
    ray.get(dag.execute())
    assert ray.get(log.steps_run.remote()) == ["a", "b"]


def test_refs_bound_as_arguments_are_resolved_as_in_remote(ray_start):
    ref = ray.put(40)
    assert ray.get(add.bind(ref, echo.bind(2)).execute()) == 42
    assert ray.get(resolve_nested.bind([ref]).execute()) == [["ObjectRef", 40]]


def test_keyword_arguments_are_resolved(ray_start):
    dag = add.bind(a=echo.bind(5), b=add.bind(1, b=1))
    assert ray.get(dag.execute()) == 7


def test_nodes_nested_in_containers_arrive_as_refs(ray_start):
    """As with refs passed by hand, a nested node's value is a ref inside the task."""
    one, two = echo.bind(1), echo.bind(2)
    assert ray.get(resolve_nested.bind([one, two]).execute()) == [
        ["ObjectRef", 1],
        ["ObjectRef", 2],
    ]
    assert ray.get(resolve_nested.bind({"x": one}).execute()) == {"x": ["ObjectRef", 1]}
    assert ray.get(resolve_nested.bind(Holder(two)).execute()) == ["Holder", "ObjectRef", 2]


@ray.remote
def run_a_dag_inside(x):
    return ray.get(add.bind(echo.bind(x), 1).execute())


def test_a_task_can_build_and_run_a_dag(ray_start):
    assert ray.get(run_a_dag_inside.remote(4)) == 5


def test_options_bind_runs_with_the_options(ray_start):
    @ray.remote(num_cpus=1)
    def two_values(x):
        return x, x + 1

    node = two_values.options(num_returns=2, name="pair").bind(3)
    assert node.get_options() == {"num_cpus": 1, "num_returns": 2, "name": "pair"}
    refs = node.execute()
    assert isinstance(refs, list)
    assert ray.get(refs) == [3, 4]
    assert two_values.bind(1).get_options() == {"num_cpus": 1}
    assert add.bind(1, 2).get_options() == {}


def test_get_args_and_kwargs_give_the_bound_values(ray_start):
    inner = echo.bind(1)
    node = add.bind(inner, b={"k": inner})
    assert node.get_args() == (inner,)
    assert node.get_kwargs() == {"b": {"k": inner}}


def test_a_bound_signature_mismatch_raises_type_error_on_execute(ray_start):
    node = echo.bind(1, 2)  # binding does not check the signature
    with pytest.raises(TypeError):
        node.execute()


# -- InputNode ----------------------------------------------------------------------


def test_input_node_is_the_single_value_given_to_execute(ray_start):
    with InputNode() as inp:
        dag = add.bind(echo.bind(inp), inp)
    assert ray.get(dag.execute(2)) == 4
    assert ray.get(dag.execute(5)) == 10
    assert ray.get(dag.execute("x")) == "xx"


def test_input_index_attribute_and_key_access(ray_start):
    with InputNode() as inp:
        by_position = add.bind(inp[0], inp[1])
        by_keyword = add.bind(inp[0], inp.x)
        by_key = add.bind(inp["a"], inp["b"])
        by_attribute = add.bind(inp.m1, inp.m2)
    assert ray.get(by_position.execute(1, 2)) == 3
    assert ray.get(by_position.execute([10, 20])) == 30  # one list: indexed itself
    assert ray.get(by_keyword.execute(1, x=2)) == 3
    assert ray.get(by_key.execute({"a": 3, "b": 4})) == 7
    assert ray.get(by_attribute.execute(types.SimpleNamespace(m1=5, m2=6))) == 11


def test_the_same_input_attribute_node_is_reused(ray_start):
    with InputNode() as inp:
        assert inp[0] is inp[0]
        assert inp.x is inp.x


def test_several_inputs_reach_a_task_as_dag_input_data(ray_start):
    with InputNode() as inp:
        dag = type_name.bind(inp)
    assert ray.get(dag.execute(1)) == "int"
    assert ray.get(dag.execute(1, 2)) == "DAGInputData"
    assert ray.get(dag.execute(x=1)) == "DAGInputData"
    assert ray.get(dag.execute()) == "DAGInputData"


def test_execute_arguments_without_an_input_node_are_ignored(ray_start):
    assert ray.get(add.bind(1, 2).execute(100, x=5)) == 3


def test_a_missing_input_raises_at_execute(ray_start):
    with InputNode() as inp:
        second = echo.bind(inp[1])
        keyed = echo.bind(inp["k"])
        named = echo.bind(inp.name)
    with pytest.raises(IndexError):
        second.execute(1, x=2)
    with pytest.raises(IndexError):
        second.execute()
    with pytest.raises(TypeError):
        second.execute(1)  # the single input itself is indexed: 1[1]
    with pytest.raises(KeyError):
        keyed.execute({"j": 1})
    with pytest.raises(KeyError):
        named.execute(1, other=2)
    with pytest.raises(AttributeError):
        named.execute(1)


def test_input_node_takes_no_arguments(ray_start):
    with pytest.raises(ValueError, match="InputNode should not take any args or kwargs"):
        InputNode(0)
    with pytest.raises(ValueError, match="InputNode should not take any args or kwargs"):
        InputNode(key=1)


def test_input_keys_are_ints_or_strings(ray_start):
    with (
        InputNode() as inp,
        pytest.raises(AssertionError, match="Please only use int index or str"),
    ):
        inp[(1, 2)]


def test_input_node_outside_a_with_block_fails_at_execute(ray_start):
    dag = echo.bind(InputNode())
    with pytest.raises(AssertionError, match="InputNode is a singleton instance"):
        dag.execute(1)


def test_a_dag_with_two_input_nodes_fails(ray_start):
    with InputNode() as first:
        a = echo.bind(first)
    with InputNode() as second:
        dag = add.bind(a, echo.bind(second))
    with pytest.raises(AssertionError, match="Each DAG should only have one unique InputNode"):
        dag.execute(2)


# -- MultiOutputNode ----------------------------------------------------------------


def test_multi_output_node_returns_a_list_of_refs(ray_start):
    with InputNode() as inp:
        shared = echo.bind(inp["x"])
        dag = MultiOutputNode([shared, echo.bind(inp["y"]), add.bind(shared, 1)])
    refs = dag.execute({"x": 1, "y": 2})
    assert isinstance(refs, list)
    assert len(refs) == 3
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [1, 2, 2]


def test_multi_output_node_takes_a_tuple_but_not_a_node(ray_start):
    assert ray.get(MultiOutputNode((echo.bind(1), echo.bind(2))).execute()) == [1, 2]
    with pytest.raises(ValueError, match="Invalid input type for `args`"):
        MultiOutputNode(echo.bind(1))


def test_multi_output_node_passes_plain_values_through(ray_start):
    with InputNode() as inp:
        dag = MultiOutputNode([inp, echo.bind(inp)])
    out = dag.execute(7)
    assert out[0] == 7
    assert ray.get(out[1]) == 7


# -- actors ---------------------------------------------------------------------------


def test_executing_a_class_node_makes_an_actor(ray_start):
    node = Accumulator.bind(5)
    handle = node.execute()
    assert isinstance(handle, ray.actor.ActorHandle)
    assert ray.get(handle.inc.remote(1)) == 6


def test_a_class_node_makes_a_new_actor_on_each_execute(ray_start):
    acc = Accumulator.bind(10)
    dag = acc.inc.bind(1)
    assert ray.get(dag.execute()) == 11
    assert ray.get(dag.execute()) == 11  # a fresh actor, not 12


def test_method_calls_bound_on_a_class_node_run_in_bind_order(ray_start):
    a1 = Accumulator.bind(10)
    a2 = Accumulator.bind(10)
    a1.inc.bind(2)  # not used by the output, still run, before a1.get
    a1.inc.bind(4)
    a2.inc.bind(6)
    dag = add.bind(a1.get.bind(), a2.get.bind())
    assert ray.get(dag.execute()) == 32


def test_one_actor_serves_every_method_node_of_one_execute(ray_start):
    with InputNode() as inp:
        acc = Accumulator.bind(0)
        first = acc.inc.bind(inp)
        second = acc.inc.bind(inp)
        dag = MultiOutputNode([first, second])
    assert ray.get(dag.execute(3)) == [3, 6]


@ray.remote
class NamedAccumulator:
    def __init__(self, start):
        self.total = start

    def inc(self, k):
        self.total += k
        return self.total

    def name(self):
        return ray.get_runtime_context().get_actor_name()


def test_actor_class_and_method_options_bind(ray_start):
    node = NamedAccumulator.options(name="dag-acc", num_cpus=0).bind(1)
    assert node.get_options() == {"name": "dag-acc", "num_cpus": 0}
    call = node.inc.options(name="inc-call").bind(1)
    assert call.get_options() == {"name": "inc-call"}
    # One execute, one actor: it took the name (the DAG's handle is its only one, so
    # it ends after this execute, as in Ray; get_actor would race with that).
    assert ray.get(MultiOutputNode([call, node.name.bind()]).execute()) == [2, "dag-acc"]


def test_a_class_node_as_an_argument_is_a_handle_in_the_task(ray_start):
    @ray.remote
    def call_it(actor):
        return [type(actor).__name__, ray.get(actor.inc.remote(1))]

    assert ray.get(call_it.bind(Accumulator.bind(41)).execute()) == ["ActorHandle", 42]


@ray.remote
class Outer:
    def __init__(self, inner):
        self.inner = inner

    def inc(self, x):
        return ray.get(self.inner.inc.remote(x))


def test_a_class_node_can_construct_another(ray_start):
    outer = Outer.bind(Accumulator.bind(10))
    outer.inc.bind(2)
    dag = outer.inc.bind(3)
    assert ray.get(dag.execute()) == 15


def test_method_bind_on_a_live_handle_uses_that_actor(ray_start):
    acc = Accumulator.remote(0)
    with InputNode() as inp:
        dag = acc.inc.bind(inp)
    assert dag.get_options()["num_returns"] == 1
    assert ray.get(dag.execute(1)) == 1
    assert ray.get(dag.execute(2)) == 3
    assert ray.get(acc.get.remote()) == 3


def test_a_live_handle_method_with_two_returns_binds_two_nodes(ray_start):
    acc = Accumulator.remote(5)
    with InputNode() as inp:
        outputs = acc.pair.bind(inp)
        assert isinstance(outputs, tuple)
        assert len(outputs) == 2
        dag = MultiOutputNode(list(outputs))
    assert ray.get(dag.execute("x")) == [5, "x"]


def test_input_node_cannot_construct_an_actor(ray_start):
    with (
        InputNode() as inp,
        pytest.raises(ValueError, match="InputNode handles user dynamic input"),
    ):
        Accumulator.bind(inp)


def test_misuse_of_nodes_raises_attribute_error(ray_start):
    node = echo.bind(1)
    with pytest.raises(AttributeError, match=r"\.bind\(\) cannot be used again on"):
        node.bind()
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used on"):
        node.remote()
    actor = Accumulator.bind(0)
    with pytest.raises(AttributeError, match=r"\.bind\(\) cannot be used again on"):
        actor.bind()
    with pytest.raises(AttributeError, match="has no attribute 'remote'"):
        actor.remote()
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used on ClassMethodNodes"):
        actor.inc.remote(1)
    with pytest.raises(AttributeError, match="no_such_method"):
        actor.no_such_method  # noqa: B018


def test_node_classes_are_exposed_under_ray_dag(ray_start):
    node = echo.bind(1)
    assert isinstance(node, dag_api.FunctionNode)
    assert isinstance(node, dag_api.DAGNode)
    actor = Accumulator.bind(0)
    assert isinstance(actor, dag_api.ClassNode)
    assert isinstance(actor.inc.bind(1), dag_api.ClassMethodNode)
    with InputNode() as inp:
        assert isinstance(inp, dag_api.DAGNode)
        assert isinstance(inp[0], dag_api.InputAttributeNode)
    assert ray.dag.InputNode is InputNode


@raylite_only
def test_compiled_graphs_are_not_supported(ray_start):
    """raylite has no Compiled Graphs: it says so instead of running something else."""
    with pytest.raises(NotImplementedError, match="Compiled Graphs"):
        echo.bind(1).experimental_compile()


@raylite_only
def test_execute_is_not_deprecated(ray_start):
    """Ray 2.60 warns that DAGNode.execute() is deprecated (a RayDeprecationWarning on
    each call); raylite keeps execute() as its DAG API and does not warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ray.get(echo.bind(1).execute()) == 1


def test_a_call_bound_with_a_name_runs_under_that_name(ray_start):
    @ray.remote
    class Namer:
        def m(self):
            return ray.get_runtime_context().get_task_name()

    actor = Namer.remote()
    node = actor.m.options(name="bound-call-name").bind()
    assert ray.get(node.execute()) == "bound-call-name"
