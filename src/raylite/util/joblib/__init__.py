"""joblib on raylite (Ray's `ray.util.joblib`): `register_ray()` registers the backend
as "ray", as Ray's does, and `register_raylite()` as "raylite":

    from raylite.util.joblib import register_raylite
    register_raylite()
    with joblib.parallel_config(backend="raylite"):
        GridSearchCV(model, grid, n_jobs=-1).fit(X, y)

The backend is raylite_backend.py; joblib is imported only when one is registered.
"""

from __future__ import annotations


def register_ray() -> None:
    """Register the raylite backend as joblib's "ray" backend (Ray's name)."""
    _register("ray")


def register_raylite() -> None:
    """Register the raylite backend as joblib's "raylite" backend."""
    _register("raylite")


def _register(name: str) -> None:
    try:
        from joblib.parallel import register_parallel_backend
    except ImportError as exc:
        raise ImportError(
            "The raylite joblib backend needs joblib: pip install joblib (or 'raylite[joblib]')."
        ) from exc
    from .raylite_backend import RayliteBackend

    register_parallel_backend(name, RayliteBackend)


__all__ = ["register_ray", "register_raylite"]
