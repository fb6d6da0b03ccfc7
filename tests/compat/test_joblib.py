"""joblib (and scikit-learn through it) on the engine's backend: Ray's
`ray.util.joblib.register_ray()`, backend "ray"."""

from __future__ import annotations

import importlib

import pytest

from tests._engine import AGAINST_RAY, ray, raylite_only

joblib = pytest.importorskip("joblib")
np = pytest.importorskip("numpy")
sklearn_datasets = pytest.importorskip("sklearn.datasets")
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

RAY_INIT = {"num_cpus": 2}
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def backend(ray_start):
    importlib.import_module(f"{ray.__name__}.util.joblib").register_ray()
    with joblib.parallel_config(backend="ray"):
        yield


@pytest.fixture(scope="module")
def data():
    return sklearn_datasets.make_classification(n_samples=600, n_features=20, random_state=0)


def test_grid_search_gives_the_sequential_answer(data):
    X, y = data
    grid = {"C": [0.1, 1, 10], "gamma": ["scale", 0.01]}
    parallel = GridSearchCV(SVC(), grid, n_jobs=-1, cv=3).fit(X, y)
    with joblib.parallel_config(backend="sequential"):
        alone = GridSearchCV(SVC(), grid, n_jobs=1, cv=3).fit(X, y)
    assert parallel.best_params_ == alone.best_params_
    assert np.allclose(
        parallel.cv_results_["mean_test_score"], alone.cv_results_["mean_test_score"]
    )


def test_cross_val_score_gives_the_sequential_answer(data):
    X, y = data
    parallel = cross_val_score(SVC(), X, y, n_jobs=2, cv=4)
    with joblib.parallel_config(backend="sequential"):
        alone = cross_val_score(SVC(), X, y, n_jobs=1, cv=4)
    assert np.allclose(parallel, alone)


def fails_on(i, bad):
    if i == bad:
        raise ValueError(f"call {i} failed")
    return i


def test_a_failing_call_raises_its_error_in_the_caller():
    with pytest.raises(ValueError, match="call 3 failed"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(fails_on)(i, 3) for i in range(10))
    # the backend goes on
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(fails_on)(i, -1) for i in range(4)) == [
        0, 1, 2, 3,
    ]  # fmt: skip


def test_results_in_order_and_batched():
    out = joblib.Parallel(n_jobs=2, batch_size=7)(joblib.delayed(pow)(i, 2) for i in range(50))
    assert out == [i * i for i in range(50)]


@raylite_only  # what crosses to the workers is raylite's business
def test_a_large_array_goes_through_the_store_once(monkeypatch):
    from raylite import api

    puts = []
    real_put = api.put
    monkeypatch.setattr(api, "put", lambda value, **kw: puts.append(1) or real_put(value, **kw))
    big = np.ones((1000, 500))  # 4 MB, over joblib's max_nbytes (1M)
    out = joblib.Parallel(n_jobs=2, batch_size=1)(joblib.delayed(np.sum)(big) for _ in range(8))
    assert out == [500_000.0] * 8
    assert len(puts) == 1  # eight tasks, one copy in the store


@raylite_only  # Ray's backend runs pool actors; raylite's runs tasks with these options
def test_ray_remote_args_reach_the_tasks():
    def cpus():
        return ray.get_runtime_context().get_assigned_resources().get("CPU")

    with joblib.parallel_config(backend="ray", ray_remote_args={"num_cpus": 2}):
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(cpus)() for _ in range(2)) == [2, 2]


@pytest.mark.skipif(AGAINST_RAY, reason="raylite's own name for the backend")
def test_the_raylite_name_registers_too():
    from raylite.util.joblib import register_raylite

    register_raylite()
    with joblib.parallel_config(backend="raylite"):
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
