"""`import ray` answered by raylite: an import hook for unmodified Ray programs.

Owns the finder that maps the name `ray` and every `ray.X` to raylite's module of the
same path (`ray.util.queue` is `raylite.util.queue`, the same module object, so
`isinstance` and `except` clauses agree), and `run`, which runs a script or a module
under it (`raylite run script.py`, `python -m raylite script.py`). Not the modules
themselves.

Two strengths (the finder is first on sys.meta_path either way: a `ray.X` must never
be found by the path finder in raylite's directory, a second copy of raylite.X):
- `install_as_ray()` (a driver that asked): raylite answers `import ray` even where
  real Ray is installed.
- a fallback in every raylite worker: it answers only where no `ray` package exists.
  A user module that says `import ray`, imported by a worker to load a function, then
  gets raylite; where Ray is installed it gets Ray there.

A `ray.X` that raylite lacks fails with ModuleNotFoundError naming the missing part.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import runpy
import sys
from types import ModuleType
from typing import Any

_PREFIX = "ray"


class _Alias:
    """Finds `ray[.X]` as `raylite[.X]`; loads by handing back raylite's module. A
    finder and loader by its methods (the import system asks no more): the
    importlib.abc bases would import importlib.resources and pathlib (~10 ms), in the
    fork server before its first worker, which a new session's first task waits for."""

    forced = False  # install_as_ray(): even where Ray is installed

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname == _PREFIX:
            if not self.forced and importlib.machinery.PathFinder.find_spec(_PREFIX):
                return None  # real Ray is installed: the fallback leaves it be
        elif not fullname.startswith(_PREFIX + "."):
            return None
        elif getattr(sys.modules.get(_PREFIX), "__name__", "") != "raylite":
            return None  # a submodule of real Ray
        target_name = "raylite" + fullname[len(_PREFIX) :]
        try:
            module = importlib.import_module(target_name)
        except ModuleNotFoundError as exc:
            if exc.name != target_name and not target_name.startswith(f"{exc.name}."):
                raise  # something raylite's module imports is missing: say that
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: raylite runs this program in place of Ray "
                f"and has no {target_name!r} (the parts of Ray it has are listed in its "
                "README).",
                name=fullname,
            ) from None
        spec = importlib.machinery.ModuleSpec(
            fullname, self, is_package=hasattr(module, "__path__")
        )
        spec.loader_state = module
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module: ModuleType = spec.loader_state
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module ran when raylite imported it; the import system sets
        # sys.modules["ray..."] to it. Its __spec__ and __name__ stay raylite's, so
        # pickles name it as raylite.
        pass


_FINDER = _Alias()


def _clear_real_ray() -> None:
    """Forget `ray` modules imported before the hook (real Ray's), so that the next
    `import ray` is answered by the hook."""
    for name in [n for n in sys.modules if n == _PREFIX or n.startswith(_PREFIX + ".")]:
        module = sys.modules[name]
        if not getattr(module, "__name__", "").startswith("raylite"):
            del sys.modules[name]


def install_as_ray() -> None:
    """From now on `import ray` (and `ray.X`) in this process gives raylite, even where
    Ray is installed. Idempotent."""
    _FINDER.forced = True
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    _clear_real_ray()


def install_fallback() -> None:
    """`import ray` gives raylite where no `ray` package is installed (workers)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def run(target: str, args: list[str], *, module: bool = False) -> None:
    """Run a script (or, with `module`, a module as `python -m` would) as __main__,
    with `import ray` answered by raylite and sys.argv as the program expects."""
    install_as_ray()
    sys.argv = [target, *args]
    if module:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, _script_dir(target))
        runpy.run_path(target, run_name="__main__")


def _script_dir(path: str) -> str:
    import os

    return os.path.dirname(os.path.abspath(path))
