"""runtime_env, the pure parts: checks, merge, keys, packages, and the lease book's
keying of workers by env; the node agent's pip build failure and its kept log."""

from __future__ import annotations

import asyncio
import io
import os
import zipfile

import pytest

from raylite.node.lease_book import Grant, Reject, StartWorker, WorkerState
from raylite.protocol import FailCode
from raylite.runtime_env import RuntimeEnv, packaging, spec
from raylite.runtime_env.agent import EnvAgent, SetupFailed
from tests.unit.test_lease_book import Owner, U, Worker, book, lease


# -- spec ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "error", "text"),
    [
        ({"env_vars": {"A": 1}}, TypeError, "must be of type Dict[str, str]"),
        ({"env_vars": "x"}, TypeError, "must be of type Dict[str, str]"),
        ({"working_dir": 3}, TypeError, "`working_dir` must be a string"),
        ({"working_dir": "/nonexistent/dir"}, ValueError, "is not a valid path"),
        ({"pip": "no-such-requirements.txt"}, ValueError, "is not a valid file"),
        ({"py_modules": "x"}, TypeError, "`py_modules` must be a list"),
        ({"excludes": "x"}, TypeError, "must be of type List[str]"),
        ({"config": {"setup_timeout_seconds": 0}}, ValueError, "greater than zero"),
        ({"config": {"eager_install": 1}}, TypeError, "eager_install must be a boolean"),
        ({"conda": "env"}, NotImplementedError, "conda"),
        ({"working_dir": "s3://bucket/x.zip"}, NotImplementedError, "remote package URIs"),
        ({"py_modules": ["https://h/x.zip"]}, NotImplementedError, "remote package URIs"),
        ({"nonsense": 1}, ValueError, "Unknown runtime_env field"),
        ("env_vars", TypeError, "runtime_env must be a dict"),
    ],
)
def test_validate_refuses_as_ray(env, error, text):
    with pytest.raises(error, match=None) as info:
        spec.validate(env)
    assert text in str(info.value)


def test_validate_normal_form(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# a comment\npyjokes==0.6.0\n\ntinydb\n")
    assert spec.validate({"pip": ["a", "b"]}) == {
        "pip": {"packages": ["a", "b"], "pip_check": False}
    }
    assert spec.validate({"pip": str(req)}) == {
        "pip": {"packages": ["pyjokes==0.6.0", "tinydb"], "pip_check": False}
    }
    assert spec.validate({"pip": {"packages": ["a"], "pip_check": True}})["pip"]["pip_check"]
    assert spec.validate({"config": {}}) == {
        "config": {"setup_timeout_seconds": 600, "eager_install": True}
    }
    assert spec.validate({}) is None
    assert spec.validate({"env_vars": None}) is None
    assert RuntimeEnv(env_vars={"A": "1"}) == {"env_vars": {"A": "1"}}


def test_task_level_packages_are_uris_only(tmp_path):
    spec.check_uris_only({"working_dir": "gcs://_ray_pkg_x.zip", "py_modules": ["gcs://y.zip"]})
    spec.check_uris_only(None)
    for env in ({"working_dir": str(tmp_path)}, {"py_modules": [str(tmp_path)]}):
        with pytest.raises(ValueError, match="only supported at the job level"):
            spec.check_uris_only(spec.validate(env))


def test_merge_is_rays_inheritance():
    parent = {
        "env_vars": {"A": "p", "B": "p"},
        "working_dir": "gcs://x.zip",
        "pip": {"packages": []},
    }
    child = {"env_vars": {"B": "c", "C": "c"}, "pip": {"packages": ["z"], "pip_check": False}}
    merged = spec.merge(parent, child)
    assert merged == {
        "env_vars": {"A": "p", "B": "c", "C": "c"},  # merged per variable, the child's win
        "working_dir": "gcs://x.zip",  # inherited
        "pip": {"packages": ["z"], "pip_check": False},  # overridden whole
    }
    assert spec.merge(None, child) == child
    assert spec.merge(parent, None) == parent
    assert spec.merge(None, None) is None


def test_env_key_names_the_environment_not_its_timeouts():
    a = {"env_vars": {"A": "1"}, "config": {"setup_timeout_seconds": 5, "eager_install": True}}
    b = {"env_vars": {"A": "1"}}
    assert spec.env_key(a) == spec.env_key(b) != ""
    assert spec.env_key({"env_vars": {"A": "2"}}) != spec.env_key(b)
    assert spec.env_key(None) == spec.env_key({}) == ""
    assert spec.env_key({"config": {"setup_timeout_seconds": 5}}) == ""  # no env at all
    assert spec.setup_timeout(a) == 5
    assert spec.setup_timeout({"config": {"setup_timeout_seconds": -1}}) is None


# -- packaging -------------------------------------------------------------------------
def _tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _names(data: bytes) -> list[str]:
    return sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())


def test_package_excludes_gitignore_style(tmp_path):
    _tree(
        tmp_path,
        {
            "main.py": "x",
            "data/big.bin": "b",
            "pkg/mod.py": "m",
            "pkg/cache.pyc": "c",
            "logs/a.log": "l",
            ".gitignore": "logs/\n",
            "pkg/.rayignore": "/secret.txt\n",  # relative to pkg/: pkg/secret.txt only
            "pkg/secret.txt": "s",
            "secret.txt": "kept",
        },
    )
    uri, data = packaging.package(str(tmp_path), ["data/", "*.pyc"], module=False)
    assert _names(data) == [".gitignore", "main.py", "pkg/.rayignore", "pkg/mod.py", "secret.txt"]
    assert uri.startswith("gcs://_ray_pkg_")
    assert uri.endswith(".zip")


_DEFAULT_EXCLUDED = {
    "main.py": "x",
    "pkg/m.py": "m",
    ".git/HEAD": "ref",
    ".venv/lib/site.py": "v",
    "venv/bin/python": "v",
    "pkg/__pycache__/m.cpython-311.pyc": "c",
}


def test_working_dir_leaves_out_rays_default_excludes(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", raising=False)
    monkeypatch.setattr(packaging, "_warned", set())
    _tree(tmp_path, _DEFAULT_EXCLUDED)
    with caplog.at_level("WARNING", logger="raylite"):
        _, data = packaging.package(str(tmp_path), [], module=False)
    assert _names(data) == ["main.py", "pkg/m.py"]
    # As Ray: a warning for each default that left out a directory at the top.
    warned = [r.getMessage() for r in caplog.records]
    warned = [w for w in warned if "ignored by default" in w]
    assert len(warned) == 3
    assert all("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES" in w for w in warned)
    monkeypatch.setenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "")
    assert len(_names(packaging.package(str(tmp_path), [], module=False)[1])) == 6
    monkeypatch.setenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", " .venv , venv")
    assert _names(packaging.package(str(tmp_path), [], module=False)[1]) == [
        ".git/HEAD",
        "main.py",
        "pkg/__pycache__/m.cpython-311.pyc",
        "pkg/m.py",
    ]


def test_py_modules_keep_what_a_working_dir_leaves_out_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", raising=False)
    _tree(tmp_path / "pkg", {"m.py": "m", "__pycache__/m.pyc": "c"})
    names = _names(packaging.package(str(tmp_path / "pkg"), [], module=True)[1])
    assert names == ["pkg/__pycache__/m.pyc", "pkg/m.py"]  # as Ray: defaults are working_dir's


def test_gitignore_files_are_skipped_with_rays_variable(tmp_path, monkeypatch):
    _tree(
        tmp_path,
        {
            "main.py": "x",
            "logs/a.log": "l",
            "a.tmp": "t",
            ".gitignore": "logs/\n",
            ".rayignore": "*.tmp\n",
        },
    )
    monkeypatch.delenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", raising=False)
    assert _names(packaging.package(str(tmp_path), [], module=False)[1]) == [
        ".gitignore",
        ".rayignore",
        "main.py",
    ]
    monkeypatch.setenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "1")  # .rayignore still counts
    assert _names(packaging.package(str(tmp_path), [], module=False)[1]) == [
        ".gitignore",
        ".rayignore",
        "logs/a.log",
        "main.py",
    ]


def test_package_uri_is_content_addressed(tmp_path):
    _tree(tmp_path / "a", {"m.py": "1"})
    _tree(tmp_path / "b", {"m.py": "1"})
    uri_a, _ = packaging.package(str(tmp_path / "a"), [], module=False)
    uri_b, _ = packaging.package(str(tmp_path / "b"), [], module=False)
    assert uri_a == uri_b  # the same content, whatever the path or mtime
    (tmp_path / "b" / "m.py").write_text("2")
    assert packaging.package(str(tmp_path / "b"), [], module=False)[0] != uri_a


def test_py_module_keeps_its_directory(tmp_path):
    _tree(tmp_path, {"mypkg/__init__.py": "", "mypkg/sub.py": "", "single.py": ""})
    assert _names(packaging.package(str(tmp_path / "mypkg"), [], module=True)[1]) == [
        "mypkg/__init__.py",
        "mypkg/sub.py",
    ]
    assert _names(packaging.package(str(tmp_path / "single.py"), [], module=True)[1]) == [
        "single.py"
    ]


def test_size_limit_is_rays_error(tmp_path):
    _tree(tmp_path, {"a.txt": os.urandom(2048).hex()})
    with pytest.raises(ValueError, match=r"Package size \(.*MiB\) exceeds the maximum size"):
        packaging.check_size(4096, limit=1024)
    packaging.check_size(100, limit=1024)


def test_unpack_and_top_dir(tmp_path):
    _tree(tmp_path / "src", {"only/m.py": "1"})
    _, data = packaging.package(str(tmp_path / "src"), [], module=False)
    dest = packaging.unpack(data, str(tmp_path / "out"))
    assert packaging.top_dir(dest) == str(tmp_path / "out" / "only")  # one top dir: it
    assert packaging.unpack(data, dest) == dest  # there already: kept


# -- the lease book: workers by env ----------------------------------------------------
def _env_lease(owner, key, env=None):
    req = lease({"CPU": U}, owner)
    req.env_key = key
    req.runtime_env = env or {"env_vars": {"K": key}}
    return req


def test_lease_of_an_env_gets_a_worker_of_that_env_only():
    b = book(4)
    owner = Owner()
    default = Worker()
    b.starting = 1
    b.worker_started(default)  # a default pool worker, idle
    actions = b.request(_env_lease(owner, "re-x"))
    starts = [a for a in actions if isinstance(a, StartWorker)]
    assert not any(isinstance(a, Grant) for a in actions)  # not the default worker
    assert [(s.lease, s.env_key) for s in starts] == [(None, "re-x")]
    x = Worker(env_key="re-x")
    granted = [a for a in b.worker_started(x) if isinstance(a, Grant)]
    assert [g.worker for g in granted] == [x]
    # returned, it idles among env x's workers: a default lease never gets it
    b.lease_returned(granted[0].lease.lease_id, kill=False)
    assert b.idle_env == {"re-x": [x]}
    assert b.idle == [default]
    got = [a.worker for a in b.request(lease({"CPU": U}, owner)) if isinstance(a, Grant)]
    assert got == [default]
    # another env's lease starts its own worker
    starts = [a for a in b.request(_env_lease(owner, "re-y")) if isinstance(a, StartWorker)]
    assert [s.env_key for s in starts] == ["re-y"]
    # and env x's next lease takes x again, no start
    actions = b.request(_env_lease(owner, "re-x"))
    assert [a.worker for a in actions if isinstance(a, Grant)] == [x]


def test_env_failed_rejects_its_waiting_requests():
    b = book(4)
    owner = Owner()
    b.request(_env_lease(owner, "re-bad"))
    b.request(_env_lease(owner, "re-bad"))
    other = _env_lease(owner, "re-ok")
    b.request(other)
    actions = b.env_failed("re-bad", None, "pip said no")
    rejects = [a for a in actions if isinstance(a, Reject)]
    assert len(rejects) == 2
    assert {r.code for r in rejects} == {FailCode.RUNTIME_ENV_SETUP_FAILED}
    assert rejects[0].reason == "pip said no"
    assert b.pending == [other]


def test_idle_env_workers_retire():
    b = book(4)
    owner = Owner()
    b.request(_env_lease(owner, "re-x"))
    x = Worker(env_key="re-x")
    grant = next(a for a in b.worker_started(x) if isinstance(a, Grant))
    b.lease_returned(grant.lease.lease_id, kill=False)
    actions = b.retire_idle({x.worker_id})
    assert [a.worker for a in actions] == [x]
    assert b.idle_env == {}
    b.worker_died(x, "retired")
    assert x.state is WorkerState.DEAD


# -- the agent -------------------------------------------------------------------------
def test_a_failed_pip_build_fails_with_its_log_and_stays_failed(tmp_path):
    async def no_fetch(uri: str) -> bytes:
        raise AssertionError("no package here")

    async def run() -> None:
        agent = EnvAgent(str(tmp_path), no_fetch)
        env = {"pip": {"packages": [str(tmp_path / "no-such-dir")], "pip_check": False}}
        with pytest.raises(SetupFailed) as info:
            await agent.setup("re-bad", env)
        assert "Build log" in str(info.value)
        assert "no-such-dir" in str(info.value)
        assert agent.setup("re-bad", env).done()  # kept: not built again

    asyncio.run(run())
    assert not (tmp_path / "pip" / spec.pip_key({"packages": [], "pip_check": False})).exists()
    assert not list((tmp_path / "pip").iterdir())  # a failed build leaves nothing


def test_agent_unpacks_a_working_dir_once(tmp_path):
    _tree(tmp_path / "wd", {"m.py": "1"})
    uri, data = packaging.package(str(tmp_path / "wd"), [], module=False)

    async def no_fetch(uri: str) -> bytes:
        raise AssertionError("it is in the cache")

    async def run() -> str:
        agent = EnvAgent(str(tmp_path / "rr"), no_fetch)
        agent.store_package(uri, data)
        env = {"working_dir": uri, "env_vars": {"A": "1"}}
        setup = await agent.setup("re-w", env)
        assert setup.sys_path == [setup.cwd]
        assert setup.python is None
        assert setup.env_vars == {"A": "1"}
        assert (await agent.setup("re-w", env)) is setup
        return setup.cwd

    cwd = asyncio.run(run())
    assert (tmp_path / "rr" / "unpacked").is_dir()
    assert os.path.isfile(os.path.join(cwd, "m.py"))


def test_unused_venvs_are_collected_oldest_first(tmp_path):
    from raylite.config import CONFIG
    from raylite.runtime_env.agent import _Venv

    keep = CONFIG.runtime_env_cache_envs

    async def no_fetch(uri: str) -> bytes:
        raise AssertionError

    async def run() -> list[str]:
        agent = EnvAgent(str(tmp_path), no_fetch)
        for i in range(keep + 2):
            path = tmp_path / f"v{i}"
            path.mkdir()
            agent.venvs[f"p{i}"] = _Venv(str(path), users=0, last_used=float(i))
            done = asyncio.get_running_loop().create_future()
            done.set_result(str(path))
            agent.builds[f"p{i}"] = done
            agent.venv_of[f"re-{i}"] = f"p{i}"
        agent.venvs["p0"].users = 1  # in use: never collected
        return agent.collect()

    removed = asyncio.run(run())
    assert removed == ["p1"]  # keep+1 unused, the oldest goes
    assert not (tmp_path / "v1").exists()
    assert (tmp_path / "v2").exists()
    assert (tmp_path / "v0").exists()
    assert (tmp_path / f"v{keep + 1}").exists()
