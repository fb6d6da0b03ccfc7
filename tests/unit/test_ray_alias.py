"""The `ray` import hook in-process: which `import ray` it answers, and with what."""

from __future__ import annotations

import sys

import pytest

from raylite import ray_alias


@pytest.fixture
def clean_imports(monkeypatch):
    """Each test's hook, `ray` modules and sys.path are undone after it."""
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(ray_alias._FINDER, "forced", False)
    saved = {n: m for n, m in sys.modules.items() if n == "ray" or n.startswith("ray.")}
    for name in saved:
        del sys.modules[name]
    yield
    for name in [n for n in sys.modules if n == "ray" or n.startswith("ray.")]:
        del sys.modules[name]
    sys.modules.update(saved)


@pytest.fixture
def real_ray(tmp_path):
    """A stand-in for an installed Ray: a `ray` package on sys.path."""
    pkg = tmp_path / "ray"
    (pkg / "util").mkdir(parents=True)
    (pkg / "__init__.py").write_text("REAL = True\n")
    (pkg / "util" / "__init__.py").write_text("REAL = True\n")
    sys.path.insert(0, str(tmp_path))
    return pkg


def test_install_as_ray_gives_raylites_own_modules(clean_imports):
    import raylite
    import raylite.util.queue

    ray_alias.install_as_ray()
    import ray
    import ray.util.queue
    from ray.exceptions import RayTaskError

    assert ray is raylite
    assert ray.util.queue is raylite.util.queue  # the same object: isinstance agrees
    assert RayTaskError is raylite.exceptions.RayTaskError
    assert sys.modules["ray.util"] is raylite.util


def test_a_part_raylite_lacks_is_named(clean_imports):
    ray_alias.install_as_ray()
    with pytest.raises(ModuleNotFoundError, match=r"'ray\.data'.*no 'raylite\.data'") as info:
        import ray.data  # noqa: F401
    assert info.value.name == "ray.data"


def test_install_as_ray_wins_over_an_installed_ray(clean_imports, real_ray):
    import ray

    assert ray.REAL  # imported before: real Ray
    ray_alias.install_as_ray()
    import ray as again

    assert again.__name__ == "raylite"


def test_the_fallback_leaves_an_installed_ray_be(clean_imports, real_ray):
    ray_alias.install_fallback()
    import ray
    import ray.util

    assert ray.REAL
    assert ray.util.REAL


def test_the_fallback_answers_where_no_ray_is_installed(clean_imports, monkeypatch):
    import raylite

    monkeypatch.setattr(
        ray_alias.importlib.machinery.PathFinder, "find_spec", classmethod(lambda *a: None)
    )  # wherever this test runs, no `ray` on the path
    ray_alias.install_fallback()
    import ray

    assert ray is raylite
