"""Dask graphs on the engine's scheduler (Ray's `ray.util.dask.ray_dask_get`): the
same results as Dask's own synchronous scheduler."""

from __future__ import annotations

import importlib

import pytest

from tests._engine import ray, raylite_only

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

RAY_INIT = {"num_cpus": 2}
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def get(ray_start):
    return importlib.import_module(f"{ray.__name__}.util.dask").ray_dask_get


def test_an_array_computation_matches_dask(get):
    x = da.random.RandomState(0).random((1200, 1200), chunks=(300, 300))
    y = (x @ x.T).sum(axis=0)[:10] + x.mean()
    assert np.allclose(y.compute(scheduler=get), y.compute(scheduler="sync"))


def test_a_dataframe_groupby_matches_dask(get):
    df = pd.DataFrame({"a": np.arange(2000) % 7, "b": np.arange(2000.0), "c": 1})
    ddf = dd.from_pandas(df, npartitions=5)
    expr = ddf.groupby("a").agg({"b": "mean", "c": "sum"})
    ours = expr.compute(scheduler=get).sort_index()
    theirs = expr.compute(scheduler="sync").sort_index()
    pd.testing.assert_frame_equal(ours, theirs)


def test_several_collections_at_once_and_as_the_default(get):
    x = da.arange(100, chunks=10)
    total, biggest = dask.compute(x.sum(), x.max(), scheduler=get)
    assert (total, biggest) == (4950, 99)
    with dask.config.set(scheduler=get):
        assert (x * 2).sum().compute() == 9900


def boom(block):
    raise ValueError("bad block")


def test_a_failing_node_raises_its_error(get):
    x = dask.delayed(boom)(dask.delayed(sum)([1, 2]))
    with pytest.raises(ValueError, match="bad block"):
        x.compute(scheduler=get)


def test_persist_gives_object_refs(get):
    x = da.arange(10, chunks=5).sum()
    (ref,) = get(dict(x.__dask_graph__()), [x.__dask_keys__()[0]], ray_persist=True)
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == 45


@raylite_only  # raylite's own names
def test_raylites_names(ray_start):
    from raylite.util.dask import enable_dask_on_raylite, raylite_dask_get

    x = da.arange(10, chunks=5)
    assert x.sum().compute(scheduler=raylite_dask_get) == 45
    with enable_dask_on_raylite():
        assert x.max().compute() == 9
