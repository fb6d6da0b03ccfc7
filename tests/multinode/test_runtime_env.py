"""Runtime environments across a cluster (issue 14): a job's working_dir and py_modules
uploaded by a driver on h2 reach a task on h3 through the head (h3 reads no path of
the driver's: it fetches the package by its URI), env_vars reach h3's workers, a
detached actor (started by the head) gets its env, and a pip env is built on the node
that runs the task (h3), in its own virtualenv."""

from __future__ import annotations

import pytest

from tests._engine import raylite_only

pytestmark = [pytest.mark.timeout(240), raylite_only]


def test_working_dir_from_a_driver_on_h2_runs_on_h3(cluster, tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "mn_wd_module.py").write_text("VALUE = 'from the driver on h2'\n")
    (wd / "data.txt").write_text("data")
    pm = tmp_path / "mn_pm_pkg"
    pm.mkdir()
    (pm / "__init__.py").write_text("VALUE = 'py_module'\n")
    cluster.start_node("h1", head=True)
    cluster.start_node("h2")
    cluster.start_node("h3")
    out = cluster.driver(
        "h2",
        f"""
        env = {{"working_dir": {str(wd)!r}, "py_modules": [{str(pm)!r}],
               "env_vars": {{"MN_VAR": "v"}}}}
        ray.init(address="auto", runtime_env=env)

        @ray.remote(resources={{"h3": 1}})
        def on_h3():
            import mn_pm_pkg
            import mn_wd_module

            with open("data.txt") as f:
                data = f.read()
            return (os.environ["TESTNET_HOST"], mn_wd_module.VALUE, mn_pm_pkg.VALUE, data,
                    os.environ.get("MN_VAR"), os.getcwd())

        got = ray.get(on_h3.remote(), timeout=120)

        @ray.remote(resources={{"h3": 1}})
        class Detached:
            def read(self):
                import mn_wd_module

                return os.environ.get("DET_VAR"), os.environ.get("MN_VAR"), mn_wd_module.VALUE

        det = Detached.options(
            name="renv_detached", lifetime="detached", runtime_env={{"env_vars": {{"DET_VAR": "d"}}}}
        ).remote()
        det_got = ray.get(det.read.remote(), timeout=120)
        ray.kill(det)
        print(json.dumps({{"got": got, "detached": det_got}}))
        ray.shutdown()
        """,
        timeout=180,
    )
    host, value, pm_value, data, var, cwd = out["got"]
    assert (host, value, pm_value, data, var) == (
        "h3",
        "from the driver on h2",
        "py_module",
        "data",
        "v",
    )
    assert cwd != str(wd)  # unpacked on h3 from the package, not the driver's directory
    assert "runtime_resources" in cwd
    # a detached actor (created by the head) runs in its env merged with the job's
    assert out["detached"] == ["d", "v", "from the driver on h2"]


def test_a_pip_env_is_built_on_the_node_that_runs_the_task(cluster, tmp_path):
    # The hosts of the testnet may not reach the registry: the wheel is fetched here
    # first, and the job's env names it by path (the hosts share this file system).
    import subprocess
    import sys

    wheels = tmp_path / "wheels"
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "-d", str(wheels), "pyjokes==0.8.3"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if fetched.returncode != 0:
        pytest.skip(f"pyjokes cannot be downloaded here: {fetched.stderr[-300:]}")
    wheel = str(next(wheels.glob("*.whl")))
    cluster.start_node("h1", head=True)
    cluster.start_node("h2")
    cluster.start_node("h3")
    out = cluster.driver(
        "h2",
        f"""
        ray.init(address="auto", runtime_env={{"pip": [{wheel!r}]}})

        @ray.remote(resources={{"h3": 1}})
        def joke():
            from importlib.metadata import version

            import pyjokes

            assert pyjokes.get_joke()
            return os.environ["TESTNET_HOST"], version("pyjokes"), sys.prefix

        print(json.dumps({{"got": ray.get(joke.remote(), timeout=180)}}))
        ray.shutdown()
        """,
        timeout=240,
    )
    host, version, prefix = out["got"]
    assert (host, version) == ("h3", "0.8.3")
    assert "runtime_resources" in prefix  # its own virtualenv, built on h3
