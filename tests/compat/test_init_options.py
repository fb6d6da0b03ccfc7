"""init()'s less common arguments (issue 13): _temp_dir, _memory, _node_ip_address,
_metrics_export_port, labels, logging_config, job_config; local_mode and the resource
isolation arguments refused as Ray 2.60 refuses them."""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import urllib.request

import pytest

from tests._engine import AGAINST_RAY, ray, raylite_only, wait_for

pytestmark = pytest.mark.timeout(180)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _host_ip() -> str:
    """This machine's routable address (Ray turns 127.0.0.1 into it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


TEMP_DIR = tempfile.mkdtemp(prefix="rlinit")
METRICS_PORT = _free_port()
HOST_IP = _host_ip()
OPTIONS = {
    "num_cpus": 1,
    "_temp_dir": TEMP_DIR,
    "_memory": 10**9,
    "_node_ip_address": HOST_IP,
    "_metrics_export_port": METRICS_PORT,
    "labels": {"zone": "z1"},
}


@pytest.mark.ray_init(**OPTIONS)
def test_node_options_take_effect(ray_fresh):
    ctx = ray.get_runtime_context()
    assert ray.cluster_resources()["memory"] == 10**9
    assert ray.cluster_resources()[f"node:{HOST_IP}"] == 1
    (node,) = ray.nodes()
    assert node["NodeManagerAddress"] == HOST_IP
    assert node["MetricsExportPort"] == METRICS_PORT
    assert node["Labels"]["zone"] == "z1"
    assert ctx.get_node_labels()["zone"] == "z1"


def test_the_session_lives_under_temp_dir(no_engine):
    ctx = ray.init(num_cpus=1, _temp_dir=TEMP_DIR)
    try:
        assert ctx.address_info["session_dir"].startswith(TEMP_DIR + os.sep)
        assert os.path.isdir(ctx.address_info["session_dir"])
    finally:
        ray.shutdown()


@raylite_only  # Ray serves it from its metrics agent, not in the minimal install here
@pytest.mark.ray_init(**OPTIONS)
def test_metrics_are_served_on_the_export_port(ray_fresh):
    from raylite.util import metrics

    counter = metrics.Counter("init_options_probe", description="a probe")
    counter.inc(3)

    def scraped() -> str:
        url = f"http://{HOST_IP}:{METRICS_PORT}/metrics"
        return urllib.request.urlopen(url, timeout=10).read().decode()

    from tests._engine import wait_for

    wait_for(lambda: "init_options_probe" in scraped(), 30, "the counter on /metrics")


@pytest.mark.skipif(
    not AGAINST_RAY, reason="raylite keeps local mode (tests/multiprocess/test_local_mode.py)"
)
def test_local_mode_is_refused_by_ray(no_engine):
    # Ray 2.60 removed it; raylite keeps it as a debug mode (issue 16 asks for it).
    with pytest.raises(RuntimeError, match="local_mode` is no longer supported"):
        ray.init(local_mode=True)
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    "kwargs",
    [{"cgroup_path": "/sys/fs/cgroup/x"}, {"system_reserved_cpu": 1.0},
     {"system_reserved_memory": 10**9}],
)  # fmt: skip
def test_isolation_settings_need_isolation_enabled(no_engine, kwargs):
    with pytest.raises(ValueError, match="resource isolation is not enabled"):
        ray.init(num_cpus=1, **kwargs)
    assert not ray.is_initialized()


@raylite_only  # Ray's raylet dies at start on such a host (the init times out after 30 s+)
def test_resource_isolation_is_refused_here(no_engine):
    with open("/proc/mounts") as f:
        v1 = any(line.split()[2:3] == ["cgroup"] for line in f)
    with pytest.raises(RuntimeError if v1 else NotImplementedError):
        ray.init(num_cpus=1, enable_resource_isolation=True)
    assert not ray.is_initialized()


# Ray 2.60's init() takes these as given (its `ray start --labels` refuses them, and a
# non-string value kills its raylet at start); raylite checks them as `ray start` does.
@raylite_only
@pytest.mark.parametrize(
    "labels", [{"ray.io/zone": "a"}, {"-zone": "a"}, {"zone": "a b"}, {"zone": 1}]
)
def test_bad_node_labels_are_refused(no_engine, labels):
    with pytest.raises(ValueError):
        ray.init(num_cpus=1, labels=labels)
    assert not ray.is_initialized()


CODE_DIR = tempfile.mkdtemp(prefix="rlcode")
with open(os.path.join(CODE_DIR, "rl_init_options_mod.py"), "w") as _f:
    _f.write("VALUE = 42\n")


def _job_config():
    from importlib import import_module

    job_config = import_module(f"{ray.__name__}.job_config")
    return job_config.JobConfig(
        code_search_path=[CODE_DIR], ray_namespace="jc-namespace", metadata={"team": "a"}
    )


def test_job_config_namespace(no_engine):
    ray.init(num_cpus=1, job_config=_job_config())
    try:
        assert ray.get_runtime_context().namespace == "jc-namespace"
    finally:
        ray.shutdown()


# Ray, given a code_search_path, loads a task's function by importing its module from
# the path instead of unpickling it (so a function defined in a test cannot run there);
# raylite adds the path to each worker's sys.path and still ships the function.
@raylite_only
def test_job_config_code_search_path_is_on_the_workers_path(no_engine):
    ray.init(num_cpus=1, job_config=_job_config())
    try:

        @ray.remote
        def read():
            import rl_init_options_mod

            return rl_init_options_mod.VALUE

        assert ray.get(read.remote(), timeout=60) == 42
    finally:
        ray.shutdown()


def test_init_namespace_wins_over_job_config(no_engine):
    ray.init(num_cpus=1, namespace="given", job_config=_job_config())
    try:
        assert ray.get_runtime_context().namespace == "given"
    finally:
        ray.shutdown()


def test_logging_config_fields_are_checked():
    assert ray.LoggingConfig().log_level == "INFO"
    with pytest.raises(ValueError, match="Invalid encoding type"):
        ray.LoggingConfig(encoding="XML")
    with pytest.raises(ValueError, match="Unknown python logging standard attribute"):
        ray.LoggingConfig(additional_log_standard_attrs=["nope"])


def test_logging_config_reaches_the_workers(no_engine):
    """A task's root logger is set up as the driver's: DEBUG level, JSON records that
    carry the task's context."""
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    ray.init(num_cpus=1, logging_config=ray.LoggingConfig(encoding="JSON", log_level="DEBUG"))
    try:

        @ray.remote
        def setup():
            root = logging.getLogger()
            record = logging.getLogger("probe").makeRecord(
                "probe", logging.DEBUG, "probe.py", 7, "probe-line", (), None
            )
            handler = root.handlers[-1]
            handler.filter(record)  # adds the context
            return root.level, handler.format(record), ray.get_runtime_context().get_task_id()

        level, line, task_id = ray.get(setup.remote(), timeout=60)
        assert level == logging.DEBUG
        record = json.loads(line)
        assert record["levelname"] == "DEBUG"
        assert record["message"] == "probe-line"
        assert record["lineno"] == 7
        assert record["task_id"] == task_id
        assert record["job_id"] == ray.get_runtime_context().get_job_id()
    finally:
        ray.shutdown()
        root.setLevel(before[0])
        root.handlers[:] = before[1]


def test_job_config_default_actor_lifetime_detached(no_engine):
    """An actor that names no lifetime gets the job's default: with "detached" it stays
    when its last handle goes, while an explicitly non-detached one ends."""
    from importlib import import_module

    job_config = import_module(f"{ray.__name__}.job_config")
    ray.init(num_cpus=1, job_config=job_config.JobConfig(default_actor_lifetime="detached"))
    try:

        @ray.remote(num_cpus=0)
        class Keeper:
            def pid(self):
                return os.getpid()

        kept = Keeper.options(name="kept-by-default").remote()
        gone = Keeper.options(name="ends", lifetime="non_detached").remote()
        pid = ray.get(kept.pid.remote(), timeout=60)
        ray.get(gone.pid.remote(), timeout=60)
        del kept, gone

        def ended() -> bool:
            try:
                ray.get_actor("ends")
            except ValueError:
                return True
            return False

        wait_for(ended, 60, "the non-detached actor to end")
        assert ray.get(ray.get_actor("kept-by-default").pid.remote(), timeout=60) == pid
        ray.kill(ray.get_actor("kept-by-default"))
    finally:
        ray.shutdown()


@raylite_only  # Ray's dashboard is not in the minimal install here
def test_the_dashboard_asks_the_proxy_server_first(no_engine):
    import http.server
    import threading
    import urllib.error
    import urllib.parse

    seen: list[dict[str, str]] = []

    class History(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(dict(self.headers))
            status, body = (
                (200, b'{"from": "history"}') if self.path == "/api/cluster" else (404, b"no")
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), History)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ctx = ray.init(
            num_cpus=1,
            include_dashboard=True,
            dashboard_port=0,
            proxy_server_url=f"http://127.0.0.1:{server.server_port}",
        )
        token = urllib.parse.parse_qs(urllib.parse.urlparse(ctx.dashboard_login_url).query)[
            "token"
        ][0]

        def get(path: str) -> bytes:
            req = urllib.request.Request(
                f"http://{ctx.dashboard_url}{path}", headers={"Authorization": f"Bearer {token}"}
            )
            return urllib.request.urlopen(req, timeout=30).read()

        assert json.loads(get("/api/cluster")) == {"from": "history"}
        assert "from" not in json.loads(get("/api/tasks"))  # a 404 there: answered here
        assert all("Authorization" not in h and "authorization" not in h for h in seen)
    finally:
        ray.shutdown()
        server.shutdown()
        thread.join(timeout=10)
