"""Runtime environments across a cluster (issue 14): a job's working_dir and py_modules
uploaded by a driver on h2 reach a task on h3 through the head (h3 reads no path of
the driver's: it fetches the package by its URI), env_vars reach h3's workers, and a
detached actor (started by the head) gets its env."""

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
