"""A 3-node cluster on testnet hosts: joining, placement, objects across nodes, failures.

Every test starts its own cluster (head in h1, h2 and h3 join) and stops it with
`raylite stop` in each host; the fixture checks no node manager is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests._engine import raylite_only
from tests.multinode.conftest import ENV, NET, NODE_TIMEOUT_S, in_host
from tests.unit.test_head_storage import redis_server_bin  # noqa: F401 - a fixture

pytestmark = [pytest.mark.timeout(240), raylite_only]


def _three(cluster) -> None:
    out = cluster.start_node("h1", head=True)
    assert f"raylite start --address={cluster.head}" in out  # how to join is printed
    for host in ("h2", "h3"):
        cluster.start_node(host)


def test_nodes_join_and_status_shows_the_whole_cluster(cluster):
    _three(cluster)
    status = cluster.status("h2")  # asked through a joined node: it asks the head
    alive = [n for n in status["nodes"] if n["alive"]]
    assert sorted(n["ip"] for n in alive) == ["10.78.0.1", "10.78.0.2", "10.78.0.3"]
    out = cluster.driver(
        "h1",
        """
        ray.init(address="auto")
        res = ray.cluster_resources()
        nodes = ray.nodes()
        print(json.dumps({"cpu": res["CPU"], "h3": res.get("h3"), "n": len(nodes),
                          "alive": all(n["Alive"] for n in nodes)}))
        ray.shutdown()
        """,
    )
    assert out["cpu"] == 6.0
    assert out["h3"] == 1.0
    assert out["n"] == 3
    assert out["alive"]


def test_tasks_go_where_their_resources_are_and_spread(cluster):
    _three(cluster)
    out = cluster.driver(
        "h1",
        """
        from raylite.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        ray.init(address="10.78.0.1:6380")

        @ray.remote
        def where():
            time.sleep(0.2)
            return os.environ["TESTNET_HOST"], ray.get_runtime_context().get_node_id()

        pinned = {h: ray.get(where.options(resources={h: 1}).remote())[0]
                  for h in ("h1", "h2", "h3")}
        # 6 CPUs, 12 tasks of 0.2 s: the busy head spills work to the other nodes.
        busy = sorted({h for h, _ in ray.get([where.remote() for _ in range(12)])})

        @ray.remote(scheduling_strategy="SPREAD")
        def together(barrier, n):
            # Each waits until all n run at once: none ends early and leaves its worker
            # free for another (a reused lease would not be spread: one lease, one node).
            import tempfile
            os.close(tempfile.mkstemp(dir=barrier)[0])
            end = time.monotonic() + 30
            while len(os.listdir(barrier)) < n and time.monotonic() < end:
                time.sleep(0.01)
            return os.environ["TESTNET_HOST"]

        import tempfile
        barrier = tempfile.mkdtemp()  # one file system for all hosts of the testnet
        # 3 leases asked at once, placed round-robin over the 3 nodes.
        spread = sorted(set(ray.get([together.remote(barrier, 3) for _ in range(3)])))
        node_of = {h: n for h, n in ray.get([where.options(resources={h: 1}).remote()
                                              for h in ("h1", "h2", "h3")])}
        hard = ray.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_of["h3"], soft=False)).remote())[0]
        soft = ray.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            "ff" * 16, soft=True)).remote())[0]
        try:
            ray.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                "ff" * 16, soft=False)).remote(), timeout=30)
            unschedulable = ""
        except ray.exceptions.TaskUnschedulableError as exc:
            unschedulable = str(exc)

        @ray.remote(resources={"h2": 1})
        class OnH2:
            def host(self):
                return os.environ["TESTNET_HOST"]

        actor_host = ray.get(OnH2.remote().host.remote())
        print(json.dumps({"pinned": pinned, "busy": busy, "spread": spread, "hard": hard,
                          "soft": soft, "unschedulable": unschedulable,
                          "actor": actor_host}))
        ray.shutdown()
        """,
    )
    assert out["pinned"] == {"h1": "h1", "h2": "h2", "h3": "h3"}
    assert len(out["busy"]) >= 2, out
    assert out["spread"] == ["h1", "h2", "h3"]
    assert out["hard"] == "h3"
    assert out["soft"] in ("h1", "h2", "h3")
    assert "affinity" in out["unschedulable"]
    assert out["actor"] == "h2"


def test_objects_move_between_nodes_and_to_the_driver(cluster):
    _three(cluster)
    out = cluster.driver(
        "h1",
        """
        import numpy as np
        ray.init(address="auto")

        @ray.remote(resources={"h2": 1})
        def make(n):
            return np.arange(n, dtype=np.int64)

        @ray.remote(resources={"h3": 1})
        def total(a):
            return int(a.sum()), os.environ["TESTNET_HOST"]

        n = 8_000_000  # 64 MB: through the store, pulled in chunks
        ref = make.remote(n)
        s, host = ray.get(total.remote(ref))
        local = ray.get(ref)  # the driver on h1 pulls it too
        put_ref = ray.put(np.ones(3_000_000))
        s2, _ = ray.get(total.remote(put_ref))  # a driver's object, pulled by h3
        local_ok, readonly = bool(local[-1] == n - 1), not local.flags.writeable
        del ref, local

        @ray.remote(resources={"h3": 1})
        def recycled(at_least):  # h3 keeps the freed 64 MB copy's memory for the next pull
            from raylite.util.state import store_stats
            deadline = time.monotonic() + 20
            while store_stats()["recycled_bytes"] < at_least and time.monotonic() < deadline:
                time.sleep(0.02)
            return store_stats()["recycled_bytes"]

        before = ray.get(recycled.remote(8 * n))
        m = 7_000_000  # smaller: pulled into the recycled file, which must shrink to fit
        ref2 = make.remote(m)
        s3, _ = ray.get(total.remote(ref2))
        after = ray.get(recycled.remote(0))
        print(json.dumps({"sum": s, "host": host, "expect": n * (n - 1) // 2,
                          "local_ok": local_ok, "readonly": readonly, "s2": s2,
                          "s3": s3, "expect3": m * (m - 1) // 2, "before": before,
                          "after": after}))
        ray.shutdown()
        """,
    )
    assert out["sum"] == out["expect"]
    assert out["host"] == "h3"
    assert out["local_ok"]
    assert out["readonly"]
    assert out["s2"] == 3_000_000
    assert out["before"] >= 64_000_000, "the freed copy on h3 was not kept for reuse"
    assert out["s3"] == out["expect3"]
    assert out["after"] < out["before"], "the second pull did not go into the recycled memory"


def test_output_of_tasks_on_any_node_reaches_the_driver_once_and_raylite_logs(cluster):
    _three(cluster)
    out = cluster.driver(
        "h1",
        """
        ray.init(address="auto")

        @ray.remote
        def hello():
            print("hello from", os.environ["TESTNET_HOST"], flush=True)
            return os.getpid()

        pids = {h: ray.get(hello.options(resources={h: 1}).remote()) for h in ("h1", "h3")}
        time.sleep(1.0)  # output is relayed asynchronously; the driver exits after
        print(json.dumps({"pids": pids}))
        ray.shutdown()
        """,
    )
    assert out["_stdout"].count("hello from h3") == 1
    assert out["_stdout"].count("hello from h1") == 1  # the head's own workers too: once
    # `raylite logs` on any node shows any node's worker output (the head keeps it).
    r = in_host(
        "h2",
        sys.executable,
        "-m",
        "raylite.cli",
        "logs",
        "--pid",
        str(out["pids"]["h3"]),
    )
    assert r.returncode == 0, r.stderr
    assert "hello from h3" in r.stdout


def test_killed_node_is_marked_dead_and_its_tasks_and_actors_move(cluster):
    _three(cluster)
    # The driver runs in h1 in the background; h3 is killed while tasks run there.
    prog = """
        import json, os, sys, time
        import raylite as ray
        ray.init(address="auto")

        @ray.remote(max_retries=3)
        def slow(i):
            time.sleep(4)
            return os.environ["TESTNET_HOST"]

        @ray.remote(max_restarts=1, max_task_retries=1, resources={"h3": 0.5})
        class Counter:
            def host(self):
                return os.environ["TESTNET_HOST"]

        counter = Counter.options(resources={}).remote()
        refs = [slow.options(resources={"h3": 0.2}).remote(i) for i in range(3)]
        first = ray.get(counter.host.remote())
        print("READY", first, flush=True)
        sys.stdin.readline()  # the test kills h3 now
        start = time.time()
        try:
            hosts = ray.get(refs, timeout=60)
            err = ""
        except Exception as exc:
            hosts, err = [], type(exc).__name__
        print(json.dumps({"hosts": hosts, "err": err, "s": time.time() - start}), flush=True)
        ray.shutdown()
        """
    proc = subprocess.Popen(
        NET.command("h1", sys.executable, "-c", textwrap.dedent(prog)),
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line + proc.stderr.read()
        NET.kill("h3")
        killed = time.monotonic()
        deadline = killed + NODE_TIMEOUT_S + 10
        while time.monotonic() < deadline:
            dead = [n for n in cluster.status()["nodes"] if n["ip"] == "10.78.0.3"]
            if dead and not dead[0]["alive"]:
                break
            time.sleep(0.2)
        else:
            pytest.fail("h3 was not marked dead")
        marked_after = time.monotonic() - killed
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    assert marked_after <= NODE_TIMEOUT_S + 5
    # Tasks that needed h3's resource cannot run elsewhere: they fail, never hang.
    assert result["err"] in ("WorkerCrashedError", "TaskUnschedulableError", "GetTimeoutError") or (
        result["hosts"] and "h3" not in result["hosts"]
    ), (result, err)


def test_connections_without_the_token_get_nothing_and_fuzz_crashes_nothing(cluster):
    _three(cluster)
    # A detached actor on each host, up while the ports are fuzzed, so worker ports are
    # fuzzed too (a node keeps no idle worker once a driver's leases end with it).
    warm = cluster.driver(
        "h1",
        """
        ray.init(address="auto", namespace="fuzz")
        @ray.remote
        class Pid:
            def pid(self):
                return os.getpid()
        actors = [Pid.options(name=f"pid-{h}", lifetime="detached", resources={h: 0.5})
                  .remote() for h in ("h1", "h2", "h3")]  # half: tasks there take the rest
        print(json.dumps({"pids": ray.get([a.pid.remote() for a in actors])}))
        ray.shutdown()
        """,
    )
    assert len(warm["pids"]) == 3
    # Every listening TCP port of every host: node managers, the head, workers. Run
    # inside each host, as its network namespace has its own sockets.
    probe = """
import psutil, random, socket, sys
rnd = random.Random(int(sys.argv[1]))
ports = sorted({c.laddr for c in psutil.net_connections("tcp") if c.status == "LISTEN"})
answered = 0
http = []  # the dashboard's port speaks HTTP: it may answer, with an HTTP error only
for ip, port in ports:
    for attempt in range(8):
        n = 1 if attempt == 1 else rnd.randint(36, 3000)  # one short: the handshake timeout
        blob = bytes(rnd.getrandbits(8) for _ in range(n))
        if attempt == 0:
            blob = b"RLT\\x01" + b"\\0" * 32  # the right magic, a wrong token
        try:
            s = socket.create_connection((ip, port), timeout=5)
            s.sendall(blob)
            s.settimeout(7)
            data = s.recv(100)
            if port == 8265:
                http.append(data[:12])
            else:
                if data.startswith(b"RLT\x02"):  # the server's hello: its magic and nonce
                    data = data[36:]
                answered += len(data)
        except OSError:
            pass
        finally:
            s.close()
bad_http = [d for d in http if d and not d.startswith((b"HTTP/1.0 4", b"HTTP/1.1 4"))]
print("FUZZ", len(ports), answered, len(bad_http))
"""
    for k, host in enumerate(cluster.hosts):
        r = in_host(host, sys.executable, "-c", probe, str(k), timeout=600)
        assert r.returncode == 0, r.stderr
        _, nports, answered, bad_http = r.stdout.split()
        assert int(nports) >= 2, r.stdout  # the node manager and at least one worker
        # Not one byte past the server's hello (it speaks first: a fresh nonce to
        # answer with a proof of the token) to a dialler without the token.
        assert answered == "0", r.stdout
        assert bad_http == "0", r.stdout  # the dashboard: 4xx errors, nothing else
    # Nothing crashed: every node still runs tasks, and the fuzzed actors still answer.
    after = cluster.driver(
        "h1",
        """
        ray.init(address="auto", namespace="fuzz")
        @ray.remote
        def pid():
            return os.getpid()
        print(json.dumps({"pids": ray.get([pid.options(resources={h: 0.5}).remote()
                                           for h in ("h1", "h2", "h3")]),
                          "actors": [ray.get(ray.get_actor(f"pid-{h}").pid.remote())
                                     for h in ("h1", "h2", "h3")]}))
        for h in ("h1", "h2", "h3"):
            ray.kill(ray.get_actor(f"pid-{h}"))
        ray.shutdown()
        """,
    )
    assert len(after["pids"]) == 3
    assert after["actors"] == warm["pids"]  # the same processes: none was restarted
    status = cluster.status()
    assert sum(1 for n in status["nodes"] if n["alive"]) == 3


def _redis_in_h2(request, tmp_path) -> str:
    """A real redis-server inside h2 (the head, in h1, gets killed); its URL."""
    binary = request.getfixturevalue("redis_server_bin")
    proc = subprocess.Popen(
        NET.command(
            "h2",
            binary,
            "--bind",
            "10.78.0.2",
            "--port",
            "6390",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--protected-mode",  # clients come from other hosts; the test net is private
            "no",
        ),
        env=ENV,
        stdout=open(tmp_path / "redis.log", "w"),
        stderr=subprocess.STDOUT,
    )
    request.addfinalizer(proc.kill)  # testnet down stops it too
    ping = (
        "import sys, time\n"
        "from raylite.head.storage import open_storage\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        open_storage('redis://10.78.0.2:6390').close(); sys.exit(0)\n"
        "    except ConnectionError as exc:\n"
        "        print(exc, file=sys.stderr); time.sleep(0.1)\n"
        "sys.exit(1)\n"
    )
    r = in_host("h2", sys.executable, "-c", ping, timeout=60)
    log = (tmp_path / "redis.log").read_text()
    assert r.returncode == 0, f"redis-server did not come up in h2: {r.stderr}\n{log}"
    return "redis://10.78.0.2:6390"


@pytest.mark.parametrize("storage", ["sqlite", "redis"])
def test_head_restart_keeps_nodes_and_detached_named_actors(cluster, tmp_path, storage, request):
    url = _redis_in_h2(request, tmp_path) if storage == "redis" else f"sqlite:///{tmp_path}/head.db"
    cluster.start_node("h1", head=True, storage=url)
    for host in ("h2", "h3"):
        cluster.start_node(host)
    make = """
        ray.init(address="auto")

        @ray.remote(resources={"h3": 0.1})
        class Counter:
            def __init__(self):
                self.n = 0
            def incr(self):
                self.n += 1
                return self.n

        c = Counter.options(name="counter", namespace="svc", lifetime="detached").remote()
        # and one on the head's node: it dies with the head, and may restart once
        on_head = Counter.options(
            name="on_head", namespace="svc", lifetime="detached", max_restarts=1,
            resources={"h1": 0.1},
        ).remote()
        ray.get(on_head.incr.remote())
        print(json.dumps({"n": ray.get([c.incr.remote() for _ in range(3)])[-1]}))
        ray.shutdown()
        """
    assert cluster.driver("h2", make)["n"] == 3
    use = """
        ray.init(address="auto")
        c = ray.get_actor("counter", namespace="svc")
        job = int.from_bytes(bytes.fromhex(ray.get_runtime_context().get_job_id()), "little")
        print(json.dumps({"n": ray.get(c.incr.remote(), timeout=30), "job": job}))
        ray.shutdown()
        """
    before = cluster.driver("h2", use)
    assert before["n"] == 4  # a later driver finds the detached actor
    NET.kill("h1")  # the head is gone
    cluster.start_node("h1", head=True, storage=url)
    status = _wait_alive(cluster, 3)
    assert status["head"]["storage"].startswith(storage)
    after = cluster.driver("h2", use)
    assert after["n"] == 5  # same actor, same state, through the new head
    assert after["job"] > before["job"]  # the job table survived: ids go on, none reused
    # The head's old node is marked dead once its heartbeats are missed; its detached
    # actor's owner is gone, so the new head starts it again (constructor rerun: n = 1).
    again = use.replace('"counter"', '"on_head"').replace("timeout=30", "timeout=60")
    assert cluster.driver("h2", again)["n"] == 1


def _wait_alive(cluster, n: int, timeout: float = 30) -> dict:
    """`raylite status` once n nodes are alive (the nodes rejoin a restarted head)."""
    deadline = time.monotonic() + timeout
    while True:
        status = cluster.status()
        alive = sum(1 for node in status["nodes"] if node["alive"])
        if alive == n or time.monotonic() > deadline:
            assert alive == n, status
            return status
        time.sleep(0.2)


def _wait_dead(cluster, ip: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        nodes = [n for n in cluster.status()["nodes"] if n["ip"] == ip]
        if nodes and not all(n["alive"] for n in nodes):
            return time.monotonic() - start
        time.sleep(0.2)
    pytest.fail(f"{ip} was not marked dead in {timeout} s")


def _background_driver(host: str, prog: str) -> subprocess.Popen:
    return subprocess.Popen(
        NET.command(host, sys.executable, "-c", textwrap.dedent(prog)),
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> dict:
    try:
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, out + err
    return json.loads(lines[-1])


def test_object_lost_with_its_node_is_rebuilt_by_lineage(cluster):
    _three(cluster)
    prog = """
        import json, os, sys, time
        import numpy as np
        import raylite as ray
        from raylite.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        ray.init(address="auto")

        @ray.remote
        def node_id():
            return ray.get_runtime_context().get_node_id()

        @ray.remote(max_retries=2)
        def make():
            return np.full(1_000_000, 7.0), os.environ["TESTNET_HOST"]

        @ray.remote(max_retries=2)
        def plus(pair, k):
            return pair[0] + k, os.environ["TESTNET_HOST"]

        @ray.remote(resources={"h3": 0.1})
        class Holder:
            def make(self):
                return np.full(1_000_000, 1.0)

        h3 = ray.get(node_id.options(resources={"h3": 0.1}).remote())
        on_h3 = NodeAffinitySchedulingStrategy(h3, soft=True)
        ref = make.options(scheduling_strategy=on_h3).remote()
        from_actor = Holder.remote().make.remote()
        base = make.options(scheduling_strategy=on_h3).remote()
        chained = plus.options(scheduling_strategy=on_h3).remote(base, 1.0)
        ray.wait([ref, from_actor, chained], num_returns=3)  # all on h3 only: not fetched
        del base  # released: only its recipe stays, for chained
        print("READY", flush=True)
        sys.stdin.readline()  # h3 is dead now
        value, host = ray.get(ref, timeout=60)
        chained_value, chained_host = ray.get(chained, timeout=60)
        try:
            ray.get(from_actor, timeout=60)
            lost = ""
        except ray.exceptions.ObjectLostError as exc:
            lost = type(exc).__name__
        except ray.exceptions.RayActorError as exc:
            lost = type(exc).__name__
        print(json.dumps({"sum": float(value.sum()), "host": host, "lost": lost,
                          "chained": float(chained_value.sum()), "chained_host": chained_host}),
              flush=True)
        ray.shutdown()
        """
    proc = _background_driver("h1", prog)
    line = proc.stdout.readline()
    assert line.startswith("READY"), line + proc.stderr.read()
    NET.kill("h3")
    _wait_dead(cluster, "10.78.0.3", NODE_TIMEOUT_S + 10)
    out = _finish(proc)
    assert out["sum"] == 7_000_000.0  # rerun elsewhere: soft affinity lets it move
    assert out["host"] in ("h1", "h2")
    assert out["chained"] == 8_000_000.0  # its released argument was rebuilt first
    assert out["chained_host"] in ("h1", "h2")
    assert out["lost"] in ("ObjectLostError", "OwnerDiedError", "ActorDiedError")


def test_partitioned_node_is_marked_dead_and_rejoins_without_duplicate_actors(cluster):
    _three(cluster)
    prog = """
        import json, os, sys, time
        import raylite as ray
        ray.init(address="auto")

        @ray.remote(max_restarts=1, resources={"h3": 0.1})
        class Pinned:
            def pid(self):
                return os.getpid()

        @ray.remote(max_restarts=1, max_task_retries=1)
        class Mover:
            def where(self):
                return os.environ["TESTNET_HOST"], os.getpid()

        from raylite.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        @ray.remote
        def node_id():
            return ray.get_runtime_context().get_node_id()
        h3 = ray.get(node_id.options(resources={"h3": 0.1}).remote())
        m = Mover.options(scheduling_strategy=NodeAffinitySchedulingStrategy(h3, soft=True)).remote()
        first = ray.get(m.where.remote())
        print("READY", json.dumps(first), flush=True)
        sys.stdin.readline()  # h3 was cut off and marked dead
        second = ray.get(m.where.remote(), timeout=60)
        print(json.dumps({"first": first, "second": second}), flush=True)
        ray.shutdown()
        """
    proc = _background_driver("h1", prog)
    line = proc.stdout.readline()
    assert line.startswith("READY"), line + proc.stderr.read()
    first_host, first_pid = json.loads(line.split(" ", 1)[1])
    assert first_host == "h3"
    NET.partition("h3")
    _wait_dead(cluster, "10.78.0.3", NODE_TIMEOUT_S + 10)
    out = _finish(proc)
    assert out["second"][0] in ("h1", "h2")  # restarted on a live node
    NET.heal("h3")
    # h3 comes back, is refused as the dead node, kills its workers and joins anew.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = [n for n in cluster.status()["nodes"] if n["ip"] == "10.78.0.3"]
        if any(n["alive"] for n in rows) and any(not n["alive"] for n in rows):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"h3 did not rejoin as a new node: {cluster.status()['nodes']}")
    # The old actor process on h3 is gone: the actor does not run twice.
    r = in_host("h3", "python3", "-c", f"import os; os.kill({first_pid}, 0)")
    assert r.returncode != 0, "the actor's old process still runs on h3"


@pytest.mark.timeout(600)
def test_the_tutorial_exercises_on_three_testnet_hosts(cluster):
    """The twelve exercises, with their own timing windows, on 3 hosts (tests/_cluster.py)."""
    env = {**ENV, "RAYLITE_TESTS_CLUSTER": "3", "RAYLITE_TESTS_TESTNET": "1"}
    cmd = NET.command(
        "h1",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/compat/test_tutorial.py",
    )
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=560, check=False)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "12 passed" in r.stdout, r.stdout[-3000:]


def test_task_listings_and_timeline_cover_every_node(cluster):
    _three(cluster)
    out = cluster.driver(
        "h1",
        """
        ray.init(address="auto")

        @ray.remote
        def pinned(x):
            return ray.get_runtime_context().get_node_id()

        nodes = ray.get([pinned.options(resources={h: 1}).remote(h) for h in ("h2", "h3")])
        time.sleep(0.5)  # workers report finished tasks every 0.2 s
        trace = ray.timeline()
        bars = [e for e in trace if e.get("ph") == "X" and "pinned" in e.get("name", "")]
        print(json.dumps({"nodes": nodes, "bars": len(bars)}))
        ray.shutdown()
        """,
    )
    assert out["bars"] >= 2
    r = in_host(
        "h3",
        sys.executable,
        "-m",
        "raylite.cli",
        "list",
        "tasks",
        "--format",
        "json",
        "--limit",
        "1000",
    )
    assert r.returncode == 0, r.stderr
    rows = [row for row in json.loads(r.stdout) if row["name"] == "pinned"]
    assert {row["node_id"] for row in rows} == set(out["nodes"])  # both nodes, from h3
    assert all(row["state"] == "FINISHED" for row in rows)
    # Workers (node-local tables) are listed from every node too.
    r = in_host(
        "h2",
        sys.executable,
        "-m",
        "raylite.cli",
        "list",
        "workers",
        "--format",
        "json",
        "--limit",
        "1000",
    )
    assert r.returncode == 0, r.stderr
    assert set(out["nodes"]) <= {row["node_id"] for row in json.loads(r.stdout)}


def test_dashboard_shows_every_nodes_store_and_objects(cluster):
    _three(cluster)
    out = cluster.driver(
        "h1",
        """
        import http.cookiejar, urllib.request
        import numpy as np
        from raylite import dashboard
        from raylite.node import local
        ray.init(address="auto")

        @ray.remote(resources={"h3": 1})
        def big():
            return np.ones(500_000)  # 4 MB: in h3's store

        ref = big.remote()
        ray.wait([ref])
        node = local.find_local_node("auto")
        base = node["dashboard_url"]
        login = dashboard.login_url(base, local.read_token(node["token_file"]))
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        opener.open(login, timeout=10).read()
        objects = json.loads(opener.open(base + "/api/objects?limit=1000", timeout=10).read())
        nodes = json.loads(opener.open(base + "/api/cluster", timeout=10).read())["nodes"]
        h3 = ray.get(ray.remote(lambda: ray.get_runtime_context().get_node_id())
                     .options(resources={"h3": 1}).remote())
        print(json.dumps({"on": [r["node_id"] for r in objects["rows"] if r["object_id"] == ref.hex()],
                          "h3": h3, "reported": sum(1 for n in nodes if n["store"])}))
        ray.shutdown()
        """,
    )
    assert out["on"] == [out["h3"]]  # the object, on the node that holds it
    assert out["reported"] == 3  # every node's store use, not only the head's


def test_detached_actor_is_restarted_by_the_head_once_its_owner_is_gone(cluster):
    _three(cluster)
    first = cluster.driver(
        "h1",
        """
        ray.init(address="auto", namespace="keep")

        @ray.remote(max_restarts=1, resources={"h2": 0.1})
        class Keeper:
            def __init__(self, start):
                self.value = start

            def pid(self):
                return os.getpid()

            def bump(self):
                self.value += 1
                return self.value

        keeper = Keeper.options(name="keeper", lifetime="detached").remote(10)
        # a ref argument: its object is the owner's and goes with it, so no restart later
        by_ref = Keeper.options(name="by_ref", lifetime="detached").remote(ray.put(bytes(2_000_000)))
        print(json.dumps({"pid": ray.get(keeper.pid.remote()), "bump": ray.get(keeper.bump.remote()),
                          "by_ref_pid": ray.get(by_ref.pid.remote())}))
        ray.shutdown()  # the owner leaves; its detached actor stays
        """,
    )
    assert first["bump"] == 11
    import os
    import signal

    os.kill(first["pid"], signal.SIGKILL)  # testnet hosts share one pid namespace
    os.kill(first["by_ref_pid"], signal.SIGKILL)
    second = cluster.driver(
        "h3",
        """
        ray.init(address="auto", namespace="keep")
        keeper = ray.get_actor("keeper")
        pid = ray.get(keeper.pid.remote(), timeout=60)  # a new life, started by the head
        bump = ray.get(keeper.bump.remote(), timeout=30)  # its constructor ran again
        host = ray.get_runtime_context().get_node_id()
        os.kill(pid, 9)  # no restarts left now
        try:
            ray.get(keeper.pid.remote(), timeout=60)
            died = ""
        except ray.exceptions.RayActorError as exc:
            died = type(exc).__name__
        from raylite.util.state import list_actors
        deadline = time.monotonic() + 30
        while True:  # it ends DEAD, with why, and its name is free again
            [row] = list_actors(filters=[("name", "=", "by_ref")])
            if row.state == "DEAD" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        by_ref = f"{row.state}: {row.death_cause}"
        try:
            ray.get_actor("by_ref")
        except ValueError:
            by_ref += " (name released)"
        print(json.dumps({"pid": pid, "bump": bump, "died": died, "by_ref": by_ref}))
        ray.shutdown()
        """,
    )
    assert second["pid"] != first["pid"]
    assert second["bump"] == 11
    assert second["died"] == "ActorDiedError"
    assert second["by_ref"].startswith("DEAD"), second
    assert "arguments" in second["by_ref"], second
    assert "(name released)" in second["by_ref"], second


def test_detached_actor_outlives_a_creator_killed_right_after_remote(cluster):
    # The head creates it (CreateDetached): the creator hands it over before .remote()
    # returns, so dying at once loses nothing; its constructor runs after the creator
    # is gone, on the node with the resource it asks for.
    _three(cluster)
    cluster.driver(
        "h2",
        """
        ray.init(address="auto", namespace="keep")

        @ray.remote(resources={"h3": 0.1}, max_restarts=1)
        class Keeper:
            def __init__(self):
                time.sleep(1)  # the creator is long gone when this returns
                self.calls = 0

            def where(self):
                self.calls += 1
                return os.environ["TESTNET_HOST"], os.getpid(), self.calls

        Keeper.options(name="orphan", lifetime="detached").remote()
        print(json.dumps({}), flush=True)
        os._exit(0)
        """,
    )
    use = """
        ray.init(address="auto", namespace="keep")
        keeper = ray.get_actor("orphan")
        host, pid, calls = ray.get(keeper.where.remote(), timeout=60)
        print(json.dumps({"host": host, "pid": pid, "calls": calls}))
        ray.shutdown()
        """
    first = cluster.driver("h1", use)
    assert (first["host"], first["calls"]) == ("h3", 1)
    import os
    import signal

    os.kill(first["pid"], signal.SIGKILL)  # the head restarts it (its creator is gone)
    again = cluster.driver("h1", use)
    assert (again["host"], again["calls"]) == ("h3", 1)
    assert again["pid"] != first["pid"]


def test_detached_actor_whose_owner_died_with_its_node_is_restarted_elsewhere(cluster):
    _three(cluster)
    prog = """
        import json, os, sys
        import raylite as ray
        from raylite.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        ray.init(address="auto", namespace="keep")

        @ray.remote(max_restarts=1)
        class Keeper:
            def where(self):
                return os.environ["TESTNET_HOST"], os.getpid()

        here = ray.get_runtime_context().get_node_id()
        keeper = Keeper.options(
            name="with_node", lifetime="detached",
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True),
        ).remote()
        print("READY", json.dumps(ray.get(keeper.where.remote())), flush=True)
        sys.stdin.readline()  # its owner and its worker die with h3
        """
    proc = _background_driver("h3", prog)
    line = proc.stdout.readline()
    assert line.startswith("READY"), line + proc.stderr.read()
    assert json.loads(line.split(" ", 1)[1])[0] == "h3"
    NET.kill("h3")
    proc.wait(30)
    _wait_dead(cluster, "10.78.0.3", NODE_TIMEOUT_S + 10)
    out = cluster.driver(
        "h1",
        """
        ray.init(address="auto", namespace="keep")
        host, pid = ray.get(ray.get_actor("with_node").where.remote(), timeout=60)
        print(json.dumps({"host": host}))
        ray.shutdown()
        """,
    )
    assert out["host"] in ("h1", "h2")


def test_killing_the_head_process_alone_keeps_the_actors_on_its_machine(cluster, tmp_path):
    import os
    import re
    import signal

    url = f"sqlite:///{tmp_path}/head.db"
    out = cluster.start_node("h1", head=True, storage=url)
    head_pid = int(re.search(r"head started at \S+ \(pid (\d+)\)", out).group(1))
    for host in ("h2", "h3"):
        cluster.start_node(host)
    use = """
        ray.init(address="auto")

        @ray.remote(resources={"h1": 0.1})
        class Counter:
            def __init__(self):
                self.n = 0
            def incr(self):
                self.n += 1
                return self.n, os.getpid()

        c = Counter.options(
            name="beside_head", namespace="svc", lifetime="detached", get_if_exists=True
        ).remote()
        n, pid = ray.get(c.incr.remote(), timeout=60)
        print(json.dumps({"n": n, "pid": pid}))
        ray.shutdown()
        """
    before = cluster.driver("h2", use)
    assert before["n"] == 1
    os.kill(head_pid, signal.SIGKILL)  # the head alone: h1's node and its workers stay
    out = cluster.start_node("h1", head=True, storage=url)  # h1's node rejoins it
    assert "with a node" in out
    _wait_alive(cluster, 3)
    after = cluster.driver("h2", use)
    assert after == {**before, "n": 2, "_stdout": after["_stdout"]}  # same process, same state


def test_a_departed_drivers_returns_on_another_node_are_freed(cluster):
    """A task's return lives on the node whose worker wrote it, booked to its caller:
    when the caller goes (a driver on another node exits), that node frees it, though
    the worker that wrote it lives on."""
    _three(cluster)
    out = cluster.driver(
        "h1",
        """
        import numpy as np
        ray.init(address="auto", namespace="returns")

        @ray.remote(resources={"h2": 1})
        class Maker:
            def make(self):
                return np.ones(4_000_000)  # 32 MB, in h2's store

            def used(self):
                from raylite.util.state import store_stats
                return store_stats()["used_bytes"]

        maker = Maker.options(name="maker", lifetime="detached").remote()
        before = ray.get(maker.used.remote())
        ref = maker.make.remote()
        assert ray.get(ref)[-1] == 1.0
        print(json.dumps({"before": before, "held": ray.get(maker.used.remote())}))
        ray.shutdown()
        """,
    )
    assert out["held"] >= out["before"] + 32_000_000
    out2 = cluster.driver(
        "h1",
        """
        ray.init(address="auto", namespace="returns")
        maker = ray.get_actor("maker")
        deadline = time.monotonic() + 20
        while ray.get(maker.used.remote()) > BEFORE and time.monotonic() < deadline:
            time.sleep(0.05)
        print(json.dumps({"used": ray.get(maker.used.remote())}))
        ray.kill(maker)
        ray.shutdown()
        """.replace("BEFORE", str(out["before"])),
    )
    assert out2["used"] <= out["before"], "the departed driver's return still holds h2's store"


def test_views_never_change_while_objects_cross_nodes_and_files_are_recycled(cluster):
    """tests/_churn.py across nodes: the driver on h1, its two actors on h2 and h3, its
    tasks on either. Objects are pulled both ways, their copies freed with them and
    their files recycled on every node, and no view changes. Then every node's store
    holds no object."""
    _three(cluster)
    out = cluster.driver(
        "h1",
        """
        import random
        from tests._churn import churn, store_objects
        ray.init(address="auto")
        on = ({"resources": {"h2": 0.1}}, {"resources": {"h3": 0.1}})
        out = churn(random.Random(7), 300, holder_options=on, make_options=on)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = [store_objects()] + [ray.get(h.store_objects.remote()) for h in out["holders"]]
            if not any(left):
                break
            time.sleep(0.1)
        print(json.dumps({"done": out["done"], "reused": out["reused"], "left": left}))
        ray.shutdown()
        """,
        timeout=200,
    )
    assert all(count > 10 for count in out["done"].values()), out["done"]
    assert out["reused"] > 2, out
    assert out["left"] == [[], [], []]
