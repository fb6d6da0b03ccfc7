"""Runtime environments: env_vars (merged with the job's), working_dir (the worker's cwd
and first on sys.path, with excludes), py_modules, pip (a real package from the
registry), a failed pip build (RuntimeEnvSetupError for a task and for an actor's
calls), inheritance by nested tasks, and workers never shared between envs. As in Ray,
local directories and modules are uploaded for the job's env (init) only: a task's or
actor's own env names packages by URI.

Remote functions here are defined inside the tests: cloudpickle sends them by value,
so a worker whose cwd and sys.path are a working_dir's need not import this module.
Building a pip env takes Ray tens of seconds: those tests have longer timeouts.
"""

from __future__ import annotations

import os

import pytest

from tests._engine import AGAINST_RAY, exceptions, ray, raylite_only, wait_for

JOB_ENV = {"env_vars": {"JOB_VAR": "job", "BOTH": "job"}}
# address="local": a Ray cluster another process started on this host is not ours.
RAY_INIT = {"num_cpus": 2, "address": "local", "runtime_env": JOB_ENV}
PIP_PACKAGE = "pyjokes==0.8.3"  # tiny, pure Python, installed in neither test venv
PIP_TIMEOUT = 300 if AGAINST_RAY else 120


def _env_reader():
    @ray.remote
    def read(*names):
        import os

        return [os.environ.get(n) for n in names]

    return read


def test_job_env_vars_reach_tasks(ray_start):
    read = _env_reader()
    assert ray.get(read.remote("JOB_VAR", "BOTH", "TASK_VAR")) == ["job", "job", None]


def test_task_env_vars_merge_with_the_jobs(ray_start):
    read = _env_reader()
    env = {"env_vars": {"TASK_VAR": "task", "BOTH": "task"}}
    got = ray.get(read.options(runtime_env=env).remote("JOB_VAR", "BOTH", "TASK_VAR"))
    assert got == ["job", "task", "task"]
    # the job's own workers are untouched by it
    assert ray.get(read.remote("JOB_VAR", "BOTH", "TASK_VAR")) == ["job", "job", None]


def test_decorator_runtime_env(ray_start):
    @ray.remote(runtime_env={"env_vars": {"DECO": "d"}})
    def read():
        import os

        return os.environ.get("DECO"), os.environ.get("JOB_VAR")

    assert ray.get(read.remote()) == ("d", "job")
    assert ray.get(read.options(runtime_env={"env_vars": {"DECO": "o"}}).remote()) == ("o", "job")


def test_actor_env_vars(ray_start):
    @ray.remote
    class Reader:
        def read(self, *names):
            import os

            return [os.environ.get(n) for n in names]

    a = Reader.options(runtime_env={"env_vars": {"ACTOR_VAR": "a", "BOTH": "actor"}}).remote()
    assert ray.get(a.read.remote("ACTOR_VAR", "BOTH", "JOB_VAR")) == ["a", "actor", "job"]
    b = Reader.remote()
    assert ray.get(b.read.remote("ACTOR_VAR", "BOTH", "JOB_VAR")) == [None, "job", "job"]


def test_nested_tasks_inherit_the_parent_env(ray_start):
    @ray.remote
    def child():
        import os

        return os.environ.get("PARENT_VAR"), os.environ.get("CHILD_VAR")

    @ray.remote
    def parent():
        inherited = ray.get(child.remote())
        merged = ray.get(child.options(runtime_env={"env_vars": {"CHILD_VAR": "c"}}).remote())
        return inherited, merged

    got = ray.get(parent.options(runtime_env={"env_vars": {"PARENT_VAR": "p"}}).remote())
    assert got == (("p", None), ("p", "c"))


def test_workers_of_different_envs_are_not_shared(ray_start):
    @ray.remote
    def who():
        import os

        return os.getpid(), os.environ.get("WHICH")

    pids = {}
    for which in ("x", "y", "x", "y"):
        pid, seen = ray.get(who.options(runtime_env={"env_vars": {"WHICH": which}}).remote())
        assert seen == which
        pids.setdefault(which, set()).add(pid)
    assert not pids["x"] & pids["y"]
    for _ in range(4):  # a default task never lands on one of their workers
        pid, seen = ray.get(who.remote())
        assert seen is None
        assert pid not in pids["x"] | pids["y"]


def test_bad_runtime_env_is_refused_at_the_call(ray_start):
    read = _env_reader()
    with pytest.raises(TypeError):
        read.options(runtime_env={"env_vars": {"A": 1}}).remote("A")
    with pytest.raises(TypeError):
        read.options(runtime_env={"working_dir": 3}).remote("A")


def _make_working_dir(root):
    root.mkdir()
    (root / "wd_module_for_test.py").write_text("VALUE = 'from working_dir'\n")
    (root / "data.txt").write_text("hello")
    (root / "skipped").mkdir()
    (root / "skipped" / "big.bin").write_text("x" * 1000)
    (root / "notes.log").write_text("log")
    return root


def test_working_dir_leaves_out_git_venv_and_pycache(no_engine, tmp_path, monkeypatch):
    # Ray's default excludes for a working_dir (RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES
    # unset): a project's .git and virtualenv stay on the machine that uploads it.
    monkeypatch.delenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", raising=False)
    wd = tmp_path / "wd"
    paths = [
        "keep.txt",
        ".git/HEAD",
        ".venv/marker.txt",
        "venv/marker.txt",
        "pkg/__pycache__/m.pyc",
    ]
    for rel in paths:
        (wd / rel).parent.mkdir(parents=True, exist_ok=True)
        (wd / rel).write_text(rel)
    ray.init(num_cpus=2, address="local", runtime_env={"working_dir": str(wd)})

    @ray.remote
    def present(paths):
        import os

        return [p for p in paths if os.path.exists(p)]

    assert ray.get(present.remote(paths)) == ["keep.txt"]


def test_task_level_local_paths_are_refused(ray_start, tmp_path):
    read = _env_reader()
    for env in ({"working_dir": str(tmp_path)}, {"py_modules": [str(tmp_path)]}):
        with pytest.raises(ValueError, match="only supported at the job level"):
            read.options(runtime_env=env)


def test_working_dir_is_cwd_and_importable_with_excludes(no_engine, tmp_path):
    wd = _make_working_dir(tmp_path / "wd")
    env = {"working_dir": str(wd), "excludes": ["skipped/", "*.log"]}
    ray.init(num_cpus=2, address="local", runtime_env=env)

    @ray.remote
    def look(driver_cwd):
        import os

        import wd_module_for_test

        with open("data.txt") as f:
            data = f.read()
        return (
            wd_module_for_test.VALUE,
            data,
            os.path.exists("skipped/big.bin"),
            os.path.exists("notes.log"),
            os.getcwd() != driver_cwd,
            os.environ.get("T"),
        )

    want = ("from working_dir", "hello", False, False, True, None)
    assert ray.get(look.remote(os.getcwd())) == want
    # a task's own env_vars merge with the job's env: the working_dir stays
    got = ray.get(look.options(runtime_env={"env_vars": {"T": "t"}}).remote(os.getcwd()))
    assert got == (*want[:-1], "t")

    @ray.remote
    class InDir:
        def read(self):
            import wd_module_for_test

            with open("data.txt") as f:
                return wd_module_for_test.VALUE, f.read()

    a = InDir.remote()
    assert ray.get(a.read.remote()) == ("from working_dir", "hello")


def test_working_dir_zip(no_engine, tmp_path):
    import zipfile

    path = tmp_path / "wd.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("zipped_module_for_test.py", "VALUE = 'zipped'\n")
    ray.init(num_cpus=1, address="local", runtime_env={"working_dir": str(path)})

    @ray.remote
    def look():
        import zipped_module_for_test

        return zipped_module_for_test.VALUE

    assert ray.get(look.remote()) == "zipped"


def test_py_modules(no_engine, tmp_path):
    pkg = tmp_path / "pymod_pkg_for_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .inner import VALUE\n")
    (pkg / "inner.py").write_text("VALUE = 'from py_modules'\n")
    single = tmp_path / "pymod_single_for_test.py"
    single.write_text("VALUE = 'single file'\n")
    ray.init(num_cpus=1, address="local", runtime_env={"py_modules": [str(pkg), str(single)]})

    @ray.remote
    def look():
        import pymod_pkg_for_test
        import pymod_single_for_test

        return pymod_pkg_for_test.VALUE, pymod_single_for_test.VALUE

    assert ray.get(look.remote()) == ("from py_modules", "single file")


@pytest.mark.timeout(PIP_TIMEOUT * 2)
def test_pip_package_from_the_registry(ray_start):
    @ray.remote
    def joke():
        from importlib.metadata import version

        import pyjokes

        return version("pyjokes"), isinstance(pyjokes.get_joke(), str)

    @ray.remote
    def can_import():
        try:
            import pyjokes  # noqa: F401
        except ImportError:
            return False
        return True

    env = {"pip": [PIP_PACKAGE]}
    assert ray.get(joke.options(runtime_env=env).remote(), timeout=PIP_TIMEOUT) == ("0.8.3", True)
    # cached: a second task of the env runs without another install
    assert ray.get(joke.options(runtime_env=env).remote(), timeout=60) == ("0.8.3", True)
    assert ray.get(can_import.remote()) is False  # not in the default workers


@pytest.mark.timeout(PIP_TIMEOUT * 2)
def test_bad_pip_spec_fails_with_runtime_env_setup_error(ray_start, tmp_path):
    bad = {"pip": [str(tmp_path / "no-such-package-dir")]}
    read = _env_reader()
    with pytest.raises(exceptions.RuntimeEnvSetupError) as info:
        ray.get(read.options(runtime_env=bad).remote("A"), timeout=PIP_TIMEOUT)
    assert "no-such-package-dir" in str(info.value)

    @ray.remote
    class Actor:
        def ping(self):
            return "pong"

    a = Actor.options(runtime_env=bad).remote()
    with pytest.raises(exceptions.RuntimeEnvSetupError) as info:
        ray.get(a.ping.remote(), timeout=PIP_TIMEOUT)
    assert "runtime env failed to be created" in str(info.value)
    # the engine still runs tasks
    assert ray.get(read.remote("JOB_VAR")) == ["job"]


def test_job_config_runtime_env(no_engine):
    from importlib import import_module

    job_config = import_module(f"{ray.__name__}.job_config")
    ray.init(
        num_cpus=1,
        address="local",
        job_config=job_config.JobConfig(runtime_env={"env_vars": {"JC": "jc"}}),
    )
    read = _env_reader()
    assert ray.get(read.remote("JC")) == ["jc"]


def test_init_runtime_env_replaces_the_job_configs(no_engine):
    from importlib import import_module

    job_config = import_module(f"{ray.__name__}.job_config")
    ray.init(
        num_cpus=1,
        address="local",
        runtime_env={"env_vars": {"FROM_INIT": "i"}},
        job_config=job_config.JobConfig(runtime_env={"env_vars": {"JC": "jc"}}),
    )
    read = _env_reader()
    assert ray.get(read.remote("FROM_INIT", "JC")) == ["i", None]


@pytest.mark.timeout(PIP_TIMEOUT * 2)
def test_setup_timeout_fails_instead_of_hanging(ray_start):
    import socket

    # An index that accepts connections and never answers: pip would wait on it for long.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        index = f"http://127.0.0.1:{silent.getsockname()[1]}/simple"
        env = {
            "pip": [f"--index-url={index}", "some-package-from-a-silent-index"],
            "config": {"setup_timeout_seconds": 3},
        }
        read = _env_reader()
        with pytest.raises(exceptions.RuntimeEnvSetupError):
            ray.get(read.options(runtime_env=env).remote("A"), timeout=PIP_TIMEOUT)


@raylite_only  # reads the node's session directory; Ray's layout differs
@pytest.mark.timeout(PIP_TIMEOUT * 2)
def test_eager_install_builds_the_job_env_at_init(no_engine):
    import glob

    from raylite import api

    ray.init(num_cpus=1, runtime_env={"pip": [PIP_PACKAGE]})  # eager_install: the default
    pattern = os.path.join(api._runtime.session_dir, "runtime_resources", "pip", "*", ".ready")
    wait_for(lambda: glob.glob(pattern), PIP_TIMEOUT, "the job's pip env built before any task")
