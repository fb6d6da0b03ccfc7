"""A --tls cluster started by the CLI: a head, a second node joining it on loopback.

Drivers (one on a node's machine, one enrolling from "another machine", a TMPDIR of its
own) run tasks and move a 10 MB object across nodes; every TCP port of the cluster
speaks TLS only; a plain client, one with another cluster's certificate and one with
no certificate are refused; the dashboard answers over HTTPS only; `raylite stop`
leaves no process behind. This test process never turns TLS on itself (transport.TLS
stays None here): the drivers run in processes of their own.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import psutil
import pytest

from tests._engine import AGAINST_RAY
from tests._head import run_driver

pytestmark = [
    pytest.mark.skipif(AGAINST_RAY, reason="raylite's own cluster start and TLS"),
    pytest.mark.timeout(240),
]

TOKEN = "tls test token"
CLI = [sys.executable, "-m", "raylite.cli"]

DRIVER = """
import sys
import numpy as np
import raylite as ray

ray.init(address=sys.argv[1])

@ray.remote
def add(a, b):
    return a + b

@ray.remote(resources={"far": 1})
def make():
    return np.arange(10 << 20, dtype=np.uint8)  # 10 MB, in the far node's store

@ray.remote(resources={"near": 1})
def total(a):
    return int(a.sum(dtype=np.int64))

print("TASKS", ray.get([add.remote(i, 1) for i in range(20)]) == list(range(1, 21)), flush=True)
ref = make.remote()
expect = int(np.arange(10 << 20, dtype=np.uint8).sum(dtype=np.int64))
print("ACROSS", ray.get(total.remote(ref)) == expect, flush=True)  # far -> near node
back = ray.get(ref)  # far node -> this driver
print("GET", back.nbytes == 10 << 20 and int(back.sum(dtype=np.int64)) == expect, flush=True)
print("PUT", ray.get(total.remote(ray.put(back))) == expect, flush=True)
ray.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    r = subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _processes_under(base: str) -> list[psutil.Process]:
    """Every process whose command line names a dir under `base` (node managers, their
    fork servers and workers, which are forked and keep the command line)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        with_base = any(base in part for part in p.info["cmdline"] or [])
        if with_base and p.pid != os.getpid():
            found.append(p)
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls-cluster")
    env = {**os.environ, "RAYLITE_TOKEN": TOKEN, "TMPDIR": str(tmp)}
    env.pop("RAYLITE_ADDRESS", None)
    port = _free_port()
    out = _run(
        ["start", "--head", "--tls", "--port", str(port), "--num-cpus", "1"]
        + ["--resources", '{"near": 1}', "--dashboard-port", "0"],
        env,
    )
    head = f"127.0.0.1:{port}"
    dashboard = re.search(r"View the dashboard at (\S+)", out)
    assert dashboard, out
    tls_dir = re.search(r"the cluster CA is in (\S+) \(mode 0600\)", out)
    assert tls_dir, out
    joined = _run(["start", "--address", head, "--num-cpus", "1", "--resources", '{"far": 1}'], env)
    node = re.search(r"node started at (\S+) ", joined)
    assert node, joined
    info = {
        "head": head,
        "node": node.group(1),
        "env": env,
        "tmp": str(tmp),
        "dashboard": dashboard.group(1),
        "tls_dir": tls_dir.group(1),
    }
    try:
        yield info
    finally:
        stop = subprocess.run([*CLI, "stop"], env=env, capture_output=True, text=True, timeout=120)
        _, alive = psutil.wait_procs(_processes_under(str(tmp)), timeout=20)
        for p in alive:
            p.kill()
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert not alive, f"left running after raylite stop: {[p.pid for p in alive]}"


def _driver(cluster, env: dict[str, str], address: str, script: str = DRIVER) -> str:
    return run_driver(script, address, env=env, timeout=180)


def test_a_driver_on_a_node_runs_tasks_and_moves_10mb_across_nodes(cluster):
    out = _driver(cluster, cluster["env"], cluster["head"])
    for what in ("TASKS", "ACROSS", "GET", "PUT"):
        assert f"{what} True" in out, out


def test_a_driver_elsewhere_enrols_and_works(cluster, tmp_path):
    # Another TMPDIR: no node of the cluster is found here, so the driver attaches
    # over TCP, and gets a certificate for a key it makes (tls.enrol).
    env = {**os.environ, "RAYLITE_TOKEN": TOKEN, "TMPDIR": str(tmp_path), "RAYLITE_TLS": "1"}
    out = _driver(cluster, env, f"raylite://{cluster['head']}")
    for what in ("TASKS", "ACROSS", "GET", "PUT"):
        assert f"{what} True" in out, out
    # A wrong token is refused at enrolment, with the usual words.
    bad = subprocess.run(
        [sys.executable, "-c", DRIVER, f"raylite://{cluster['head']}"],
        env={**env, "RAYLITE_TOKEN": "another token"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode != 0
    assert f"the cluster at {cluster['head']} refused the token" in bad.stderr, bad.stderr


def _cluster_tcp_ports(cluster) -> set[int]:
    ports = set()
    for p in _processes_under(cluster["tmp"]):
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        ports |= {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}
    return ports


def test_every_tcp_port_speaks_tls_and_plain_clients_are_refused(cluster):
    from raylite import tls
    from raylite.exceptions import ConnectionLost
    from raylite.transport import Connection

    _driver(cluster, cluster["env"], cluster["head"])  # workers are up and listening
    ports = _cluster_tcp_ports(cluster)
    head_port = int(cluster["head"].rpartition(":")[2])
    node_port = int(cluster["node"].rpartition(":")[2])
    assert {head_port, node_port} <= ports
    assert len(ports) >= 4, ports  # and the dashboard's, the head node's, workers'
    for port in ports:
        assert tls.probe(f"tcp:127.0.0.1:{port}"), port
    # The raylite handshake without TLS: the server waits for a TLS hello, never
    # speaks raylite, and nothing is done.
    from raylite.node.local import parse_token

    for port in (head_port, node_port):
        with pytest.raises(ConnectionLost, match="started with --tls"):
            Connection.connect(
                f"tcp:127.0.0.1:{port}", parse_token(TOKEN), lambda *a: None, timeout=2
            )


def _tls_session(port: int, ctx: ssl.SSLContext) -> bytes:
    """Connect, then read what the server says first (a TLS 1.3 server reports a
    refused client certificate after the handshake: on the first read)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw) as s,
    ):
        return s.recv(64)


def _refused(port: int, ctx: ssl.SSLContext) -> bool:
    """The TLS layer turned us away: an alert, a reset, or a close before any byte."""
    try:
        return _tls_session(port, ctx) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def test_certificates_of_another_cluster_or_none_are_refused(cluster, tmp_path):
    from raylite import tls
    from raylite.transport import MAGIC

    node_port = int(cluster["node"].rpartition(":")[2])
    # A member of this cluster: the server's first raylite bytes come through.
    ours = tls.ClusterTLS(cluster["tls_dir"])
    assert _tls_session(node_port, ours.client).startswith(MAGIC)
    # Another cluster's CA and certificate: refused by TLS.
    stranger = str(tmp_path / "stranger")
    tls.make_cluster_ca(stranger)
    assert _refused(node_port, tls.ClusterTLS(stranger).client)
    # No certificate at all (only the head's port takes one, to enrol): refused.
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(os.path.join(cluster["tls_dir"], "ca.crt"))
    assert _refused(node_port, bare)


def test_the_dashboard_answers_over_https_only(cluster):
    url = cluster["dashboard"]
    assert url.startswith("https://"), url
    ctx = ssl.create_default_context(cafile=os.path.join(cluster["tls_dir"], "ca.crt"))
    ctx.check_hostname = False  # the certificate names a cluster member, not a host
    # The login link (the token's HMAC, not the token) sets a cookie, then redirects.
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(), urllib.request.HTTPSHandler(context=ctx)
    )
    with opener.open(url, timeout=30) as resp:
        assert resp.status == 200
        assert b"raylite" in resp.read().lower()
    plain = "http://" + url.removeprefix("https://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(plain, timeout=30).read()


def test_the_job_api_works_over_https(cluster):
    # The job SDK finds the CA of the local node whose dashboard it is (sdk.ssl_context).
    base = cluster["dashboard"].split("/?")[0]
    code = textwrap.dedent(f"""
        from raylite.job_submission import JobSubmissionClient
        c = JobSubmissionClient({base!r})
        job = c.submit_job(entrypoint="python -c 'print(6 * 7)'")
        import time
        for _ in range(600):
            if str(c.get_job_status(job)) in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(0.1)
        print("STATUS", c.get_job_status(job), "LOGS", c.get_job_logs(job).strip())
    """)
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=cluster["env"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert "STATUS SUCCEEDED LOGS 42" in r.stdout, r.stdout + r.stderr


def test_key_files_are_private_and_the_ca_key_stays_on_the_head(cluster):
    head_dir = cluster["tls_dir"]
    assert sorted(os.listdir(head_dir)) == ["ca.crt", "ca.key", "node.crt", "node.key"]
    member_dirs = [
        os.path.join(root, "tls")
        for root, dirs, _ in os.walk(os.path.join(cluster["tmp"], "raylite"))
        if "tls" in dirs and os.path.join(root, "tls") != head_dir
    ]
    assert len(member_dirs) == 2  # the node beside the head and the joiner
    for d in [head_dir, *member_dirs]:
        assert os.stat(d).st_mode & 0o077 == 0, d
        for name in os.listdir(d):
            assert os.stat(os.path.join(d, name)).st_mode & 0o777 == 0o600, (d, name)
    for d in member_dirs:
        assert sorted(os.listdir(d)) == ["ca.crt", "node.crt", "node.key"]


def test_a_plain_cluster_is_unchanged_and_joiners_can_require_tls(tmp_path):
    # Without --tls: no tls/ anywhere; a joiner that asks for TLS is told it is missing.
    env = {**os.environ, "RAYLITE_TOKEN": TOKEN, "TMPDIR": str(tmp_path)}
    port = _free_port()
    _run(["start", "--head", "--port", str(port), "--num-cpus", "1"]
         + ["--include-dashboard", "false"], env)  # fmt: skip
    try:
        assert not [d for _, dirs, _ in os.walk(tmp_path) for d in dirs if d == "tls"]
        r = subprocess.run(
            [*CLI, "start", "--tls", "--address", f"127.0.0.1:{port}", "--num-cpus", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert r.returncode != 0
        assert "does not speak TLS, and TLS was required" in r.stdout + r.stderr
        quick = textwrap.dedent("""
            import sys, raylite as ray
            ray.init(address=sys.argv[1])
            print("TASKS", ray.get(ray.remote(lambda: 7).remote()) == 7, flush=True)
        """)
        out = subprocess.run(
            [sys.executable, "-c", quick, f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert "TASKS True" in out.stdout, out.stdout + out.stderr
    finally:
        subprocess.run([*CLI, "stop"], env=env, capture_output=True, timeout=120, check=False)
        _, alive = psutil.wait_procs(_processes_under(str(tmp_path)), timeout=20)
        for p in alive:
            p.kill()
        assert not alive


def test_a_head_restarted_on_its_storage_keeps_its_ca_and_its_nodes(tmp_path):
    env = {**os.environ, "RAYLITE_TOKEN": TOKEN, "TMPDIR": str(tmp_path)}
    port = _free_port()
    head = ["start", "--head", "--tls", "--port", str(port), "--num-cpus", "1"]
    head += ["--include-dashboard", "false", "--storage", f"sqlite:///{tmp_path}/head.db"]
    try:
        first = _run(head, env)
        pid = re.search(r"head started at \S+ \(pid (\d+)\)", first)
        assert pid, first
        _run(["start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1"]
             + ["--resources", '{"b": 1}'], env)  # fmt: skip
        head_proc = psutil.Process(int(pid.group(1)))
        head_proc.kill()
        head_proc.wait(30)
        _run(head, env)  # the same CA: the joiner's certificate is still good
        code = textwrap.dedent("""
            import sys, raylite as ray
            ray.init(address=sys.argv[1])
            f = ray.remote(resources={"b": 1})(lambda: "on b")
            print("RAN", ray.get(f.remote(), timeout=60), flush=True)
        """)
        r = subprocess.run(
            [sys.executable, "-c", code, f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert "RAN on b" in r.stdout, r.stdout + r.stderr
    finally:
        subprocess.run([*CLI, "stop"], env=env, capture_output=True, timeout=120, check=False)
        _, alive = psutil.wait_procs(_processes_under(str(tmp_path)), timeout=20)
        for p in alive:
            p.kill()
        assert not alive


COLLECTIVE = """
import json, sys
import numpy as np
import raylite as ray
import raylite.util.collective as col

ray.init(address=sys.argv[1])

@ray.remote(num_cpus=0)
class Member:
    def work(self, rank):
        col.init_collective_group(2, rank, backend="gloo", group_name="tls")
        g = col.get_group_handle("tls")
        kinds = sorted({type(s).__name__ for s in g.peers.values()})
        big = np.arange(600_000, dtype=np.float64) * (rank + 1)  # the ring, many records
        col.allreduce(big, group_name="tls")
        small = np.full(10, rank + 1, np.int32)
        col.allreduce(small, group_name="tls", op=col.ReduceOp.MAX)
        col.barrier("tls")
        col.destroy_collective_group("tls")
        ok = bool(np.array_equal(big, np.arange(600_000, dtype=np.float64) * 3))
        return {"kinds": kinds, "ring_ok": ok, "max": int(small[0])}

members = [Member.options(resources={r: 0.01}).remote() for r in ("near", "far")]
print("GOT", json.dumps(ray.get([m.work.remote(i) for i, m in enumerate(members)], timeout=120)))
ray.shutdown()
"""


def test_a_collective_group_across_nodes_speaks_tls(cluster):
    out = _driver(cluster, cluster["env"], cluster["head"], COLLECTIVE)
    got = json.loads(out.split("GOT ", 1)[1])
    for member in got:
        assert member["kinds"] == ["SSLSocket"]  # the peer on the other node: TLS
        assert member["ring_ok"]
        assert member["max"] == 2
