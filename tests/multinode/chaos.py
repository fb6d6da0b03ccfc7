"""The chaos soak: a checked workload on a testnet cluster while faults are injected.

Owns the soak's three parts; the testnet (tests/netns.py) and the cluster's software
are given. test_chaos.py runs it for about a minute, bench/bench_chaos.py for longer.

    test / bench ──soak()──▶ SoakCluster: head (SQLite storage) + node in h1, nodes in h2, h3
         │                        ▲ raylite start/stop, pids by psutil within each host
         ├─ Popen in h1 ─▶ WORKLOAD driver: rounds of tasks, actor calls, objects
         │                 between nodes, a named detached actor; every result and
         │                 failure recorded per key ──▶ JSON report on stdout
         └─ Chaos: SIGKILL a worker, an actor, a node manager (then start it again),
                   partition and heal h2/h3, SIGKILL and restart the head

Accounting is idempotent and keyed: each unit of work has a key; every execution
writes runs/<kind>.<key>.<pid>.<ns> holding its task id, and the effect is applied
once per key (effects/<kind>.<key>, created O_EXCL; a retry finds it and applies
nothing). Hosts share the file system, so the soak reads both directories at the end:

- nothing lost: every submitted key ended in a correct value or an error, no get hung;
- nothing counted twice: every key with a value has its effect, no effect without a
  submitted key, work that may not be retried (max_retries=0, max_task_retries=0) ran
  at most once, every run of a key is the same task id, and an actor never saw one
  call twice in one life;
- every failure is one of Ray's documented errors for a failure of the system
  (ALLOWED below; a RayTaskError only when its cause is one of them), and calls to
  the actors with unlimited restarts and retries (max_task_retries=-1) never fail;
- after the chaos: all nodes alive in `raylite status`, a task runs on every node,
  every actor answers, the detached actor is found by name from a new driver; once
  the nodes are stopped, no process is left in any host, and none of the nodes'
  shared-memory segments, session or spill directories remain.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import psutil

from tests.netns import Testnet

NODE_TIMEOUT_S = 3.0
# Failures the workload may see under chaos: Ray's documented errors for a worker,
# actor, node or object lost to a fault. Not GetTimeoutError: a result still missing
# after the workload's get timeout (60 s) is lost work, a problem.
ALLOWED = (
    "WorkerCrashedError",
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "ObjectLostError",
    "OwnerDiedError",
    "ObjectReconstructionFailedError",
    "ObjectFetchTimedOutError",
    "NodeDiedError",
    "RpcError",  # the head stayed away past head_wait_s (a get_actor, a named actor)
)
AT_MOST_ONCE = ("once", "actor_once")
FAULTS = ("kill_worker", "kill_actor", "kill_node", "partition", "restart_head")
WEIGHTS = (4, 3, 1, 1, 1)  # after one of each: the quick faults more often

WORKLOAD = r'''
import json, os, random, sys, threading, time
import numpy as np
import raylite as ray
from raylite import exceptions as rex

LEDGER, SEED = sys.argv[1], int(sys.argv[2])
ALLOWED = tuple(getattr(rex, n) for n in sys.argv[3].split(","))
GET_TIMEOUT = float(sys.argv[4])
rng = random.Random(SEED)
ray.init(address="auto", namespace="chaos")
N = 40_000  # int64s: 320 KB, past the inline limit: objects live in a node's store


def mark(kind, key, value):
    """In the worker: one run file per execution, the effect once per key."""
    tid = ray.get_runtime_context().get_task_id() or "-"
    run = os.path.join(LEDGER, "runs", f"{kind}.{key}.{os.getpid()}.{time.monotonic_ns()}")
    with open(run, "w") as f:
        f.write(tid)
    try:
        fd = os.open(os.path.join(LEDGER, "effects", f"{kind}.{key}"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return value  # a retry of work already applied: applied once, not twice
    os.write(fd, json.dumps(value).encode())
    os.close(fd)
    return value


@ray.remote(max_retries=5)
def task(key):
    time.sleep(random.uniform(0.05, 0.5))
    return mark("task", key, key * 3 + 1)


@ray.remote(max_retries=0)
def once(key):
    time.sleep(random.uniform(0.05, 0.5))
    return mark("once", key, key * 7)


@ray.remote(max_retries=5)
def make(key):
    return np.full(N, key, dtype=np.int64)


@ray.remote(max_retries=5)
def consume(arr, key, kind="obj"):
    time.sleep(random.uniform(0, 0.3))
    return mark(kind, key, [int(arr.sum()), os.environ["TESTNET_HOST"]])[0]


@ray.remote
def where(key):
    return mark("final", key, os.environ["TESTNET_HOST"])


class Account:
    """Applies each key once; a call seen twice in one life is reported."""

    def __init__(self, kind):
        self.kind = kind
        self.seen = set()

    def apply(self, key):
        again = key in self.seen
        self.seen.add(key)
        time.sleep(random.uniform(0, 0.2))
        return mark(self.kind, key, key * 5), again

    def ping(self):
        return os.getpid()


Retried = ray.remote(max_restarts=-1, max_task_retries=-1)(Account)
Once = ray.remote(max_restarts=-1, max_task_retries=0)(Account)
retried = Retried.remote("actor")
at_most_once = Once.remote("actor_once")
Registry = ray.remote(max_restarts=-1, max_task_retries=-1)(Account)
registry = Registry.options(name="registry", lifetime="detached").remote("named")
ray.get([retried.ping.remote(), at_most_once.ping.remote(), registry.ping.remote()], timeout=120)

stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
outcomes = []   # [kind, key, phase, outcome]; outcome "ok" or an error's name
problems = []   # what the workload itself saw wrong
details = []    # each error's message, for the report
next_key = [0]
want = {}  # key -> the value it must give, where not expected()


def key():
    next_key[0] += 1
    return next_key[0]


def expected(kind, k):
    return {"task": k * 3 + 1, "once": k * 7, "obj": k * N, "put": k * N}.get(kind, k * 5)


def name_of(exc):
    if isinstance(exc, rex.RayTaskError) and not isinstance(exc, ALLOWED):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ALLOWED):
            return f"RayTaskError({type(cause).__name__})", True
        return f"RayTaskError({type(cause).__name__}: {cause})", False
    for cls in type(exc).__mro__:
        if cls.__module__.startswith("raylite") and cls.__name__ != "RayTaskError":
            return cls.__name__, isinstance(exc, ALLOWED)
    return f"{type(exc).__name__}: {exc}", False


def settle(pending, phase):
    for kind, k, ref in pending:
        try:
            value = ray.get(ref, timeout=GET_TIMEOUT)
        except Exception as exc:
            name, allowed = name_of(exc)
            outcomes.append([kind, k, phase, name])
            details.append(f"{time.time():.3f} {phase} {kind} {k}: {name}: {str(exc)[-1500:]}")
            # Calls to an actor with unlimited restarts and retries never fail.
            if not allowed or phase == "final" or kind in ("actor", "named"):
                problems.append(f"{phase} {kind} {k}: {name}")
            continue
        if kind in ("actor", "actor_once", "named"):
            value, again = value
            if again:
                problems.append(f"{kind} {k}: the actor ran the same call twice in one life")
        ok = value == want.pop(k, expected(kind, k))
        outcomes.append([kind, k, phase, "ok" if ok else f"wrong value {value!r}"])
        if not ok:
            problems.append(f"{phase} {kind} {k}: wrong value {value!r}")


def submit(pending, kind, make_ref, value=None):
    k = key()
    if value is not None:
        want[k] = value
    try:
        pending.append((kind, k, make_ref(k)))
    except Exception as exc:  # .remote() itself failed
        name, allowed = name_of(exc)
        outcomes.append([kind, k, "submit", name])
        if not allowed:
            problems.append(f"submit {kind} {k}: {name}")


def round_of_work(phase):
    pending = []
    for _ in range(4):
        submit(pending, "task", lambda k: task.options(scheduling_strategy="SPREAD").remote(k))
    for _ in range(2):
        submit(pending, "once", lambda k: once.options(scheduling_strategy="SPREAD").remote(k))
    for _ in range(2):
        submit(pending, "obj", lambda k: consume.options(scheduling_strategy="SPREAD").remote(
            make.options(scheduling_strategy="SPREAD").remote(k), k))
    submit(pending, "put", lambda k: consume.options(scheduling_strategy="SPREAD").remote(
        ray.put(np.full(N, k, dtype=np.int64)), k, "put"))
    for _ in range(2):
        submit(pending, "actor", lambda k: retried.apply.remote(k))
    submit(pending, "actor_once", lambda k: at_most_once.apply.remote(k))
    # Looked up by name each round: through the head, restarted or not.
    submit(pending, "named", lambda k: ray.get_actor("registry").apply.remote(k))
    settle(pending, phase)


print("READY", flush=True)
rounds = 0
while not stop.is_set():
    round_of_work("chaos")
    rounds += 1
# The chaos has stopped and the cluster is whole again: everything must work now.
round_of_work("final")
pending = []
for host in ("h1", "h2", "h3"):
    for _ in range(2):
        submit(pending, "final", lambda k, h=host: where.options(resources={h: 0.01}).remote(k),
               value=host)
# an object made on each node and used on each other one
for a in ("h1", "h2", "h3"):
    for b in ("h1", "h2", "h3"):
        if a != b:
            submit(pending, "obj", lambda k, a=a, b=b: consume.options(resources={b: 0.01}).remote(
                make.options(resources={a: 0.01}).remote(k), k))
settle(pending, "final")
finals = [o for o in outcomes if o[0] == "final" and o[3] == "ok"]
hosts = sorted({json.load(open(os.path.join(LEDGER, "effects", f"final.{o[1]}"))) for o in finals})
print(json.dumps({"rounds": rounds, "outcomes": outcomes, "problems": problems,
                  "final_hosts": hosts, "details": details}), flush=True)
ray.shutdown()
'''

CHECK_DETACHED = """
import json, os
import raylite as ray
ray.init(address="auto", namespace="chaos")
registry = ray.get_actor("registry")
pid = ray.get(registry.ping.remote(), timeout=60)
ray.kill(registry)  # detached: it would outlive the soak otherwise
print(json.dumps({"pid": pid}))
ray.shutdown()
"""


class SoakCluster:
    """A head (SQLite storage) and a node in h1, a node each in h2 and h3; finds the
    pids of node managers, the head and workers from psutil, within each host."""

    def __init__(self, net: Testnet, env: dict[str, str], storage: str, port: int) -> None:
        self.net = net
        self.env = env
        self.storage = storage
        self.port = port
        self.hosts = ["h1", "h2", "h3"]
        self.head = f"{net.addr('h1')}:{port}"
        self.dirs: set[str] = set()  # every session and store directory a node had

    def raylite(
        self, host: str, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "raylite.cli", *args]
        return self.net.run(host, *argv, env=self.env, timeout=timeout)

    def start(self, host: str, head: bool = False) -> None:
        args = ["start", "--node-ip-address", self.net.addr(host), "--num-cpus", "2"]
        args += ["--resources", json.dumps({host: 1}), "--node-timeout-s", str(NODE_TIMEOUT_S)]
        if head:
            args += ["--head", "--port", str(self.port), "--storage", self.storage]
        else:
            args += ["--address", self.head]
        r = self.raylite(host, *args)
        if r.returncode != 0:
            raise RuntimeError(f"raylite start in {host} failed:\n{r.stdout}\n{r.stderr}")
        self.remember_dirs()

    def remember_dirs(self) -> None:
        from raylite.node.local import nodes_dir

        for path in glob.glob(os.path.join(nodes_dir(), "*.json")):
            with contextlib.suppress(OSError, ValueError):
                with open(path) as f:
                    info = json.load(f)
                if str(info.get("ip", "")).startswith(self.net.prefix + "."):
                    self.dirs.update(info[k] for k in ("session_dir", "store_dir") if info.get(k))

    def keep_logs(self, dest: str) -> None:
        """Copy the nodes' logs to `dest` (a failed soak: stopping removes them)."""
        import shutil

        self.remember_dirs()
        for d in sorted(self.dirs):
            for path in glob.glob(os.path.join(d, "*.log")) + glob.glob(
                os.path.join(d, "*", "*.log")
            ):
                with contextlib.suppress(OSError):
                    rel = os.path.relpath(path, os.path.dirname(d)).replace(os.sep, "_")
                    shutil.copy(path, os.path.join(dest, rel))

    def stop_all(self) -> None:
        for host in self.hosts:
            self.raylite(host, "stop")

    def status(self) -> dict[str, Any]:
        r = self.raylite("h1", "status", "--format", "json", timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"raylite status failed: {r.stderr}")
        return json.loads(r.stdout)

    def alive_hosts(self) -> set[str]:
        try:
            nodes = self.status()["nodes"]
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            return set()
        return {f"h{n['ip'].rsplit('.', 1)[1]}" for n in nodes if n["alive"]}

    # --- pids, within a host ----------------------------------------------------------------
    def _raylite_procs(self, host: str) -> list[psutil.Process]:
        found = []
        for pid in self.net.pids(host):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if "raylite.node" in p.cmdline():
                    found.append(p)
        return found

    def _roots(self, host: str) -> list[psutil.Process]:
        procs = self._raylite_procs(host)
        pids = {p.pid for p in procs}
        return [p for p in procs if p.ppid() not in pids]

    def node_manager(self, host: str) -> psutil.Process | None:
        for p in self._roots(host):
            with contextlib.suppress(psutil.Error):
                if "--head-only" not in p.cmdline():
                    return p
        return None

    def head_process(self) -> psutil.Process | None:
        for p in self._roots("h1"):
            with contextlib.suppress(psutil.Error):
                if "--head-only" in p.cmdline():
                    return p
        return None

    def workers(self, host: str) -> list[psutil.Process]:
        """Worker processes: children of the fork server, itself a node's child."""
        procs = self._raylite_procs(host)
        roots = {p.pid for p in self._roots(host)}
        servers = {p.pid for p in procs if p.ppid() in roots}
        return [p for p in procs if p.ppid() in servers]

    def actor_rows(self) -> tuple[list[dict[str, Any]], str]:
        """`raylite list actors` (through the head), and why it failed ("" if not)."""
        r = self.raylite("h1", "list", "actors", "--format", "json", "--limit", "1000", timeout=30)
        if r.returncode != 0:
            return [], f"exit {r.returncode}: {r.stderr.strip()[-300:]}"
        try:
            return list(json.loads(r.stdout)), ""
        except ValueError:
            return [], f"not JSON: {r.stdout[-300:]}"


class Chaos:
    """Injects one fault at a time, by pid or on the network, and counts them."""

    def __init__(
        self,
        cluster: SoakCluster,
        rng: random.Random,
        log: Callable[[str], None],
        ledger: str = "",
    ) -> None:
        self.c = cluster
        self.ledger = ledger
        self.rng = rng
        self.log = log
        self.counts: collections.Counter[str] = collections.Counter()
        self.trace: list[str] = []  # what was done when (time.time() stamps)

    def note(self, line: str) -> None:
        self.trace.append(f"{time.time():.3f} {line}")
        self.log(self.trace[-1])

    def _kill(self, proc: psutil.Process, what: str) -> bool:
        try:
            proc.send_signal(signal.SIGKILL)  # psutil checks the pid is still this process
        except psutil.Error:
            return False
        self.note(f"killed {what} pid {proc.pid}")
        return True

    def kill_worker(self) -> bool:
        """Most often a worker that has just started one of the workload's tasks (its
        run file is the newest): a kill in the middle of work, retried or failed."""
        workers = {p.pid: p for host in self.c.hosts for p in self.c.workers(host)}
        if self.ledger and self.rng.random() < 0.7:
            with os.scandir(os.path.join(self.ledger, "runs")) as it:
                newest = sorted(it, key=lambda e: e.stat().st_mtime_ns)[-5:]
            for entry in reversed(newest):
                proc = workers.get(int(entry.name.split(".")[2]))
                if proc is not None and self._kill(proc, f"a busy worker ({entry.name})"):
                    self.counts["kill_worker_busy"] += 1
                    return True
        hosts = self.c.hosts[:]
        self.rng.shuffle(hosts)
        for host in hosts:
            workers = self.c.workers(host)
            if workers and self._kill(self.rng.choice(workers), f"a worker in {host}"):
                return True
        return False

    def kill_actor(self) -> bool:
        rows, failed = self.c.actor_rows()
        pids = [a["pid"] for a in rows if a["state"] == "ALIVE" and a["pid"]]
        self.rng.shuffle(pids)
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if "raylite.node" in proc.cmdline() and self._kill(proc, "an actor"):
                    return True
        listed = [
            (a["class_name"], a["state"], a["pid"], psutil.pid_exists(a["pid"] or 0)) for a in rows
        ]
        self.note(f"no actor to kill: listed {listed} {failed}")
        return False

    def kill_node(self) -> bool:
        host = self.rng.choice(["h2", "h3"])
        proc = self.c.node_manager(host)
        if proc is None or not self._kill(proc, f"the node manager of {host}"):
            return False
        time.sleep(self.rng.uniform(0.5, 3.0))
        self._start(host)
        return True

    def partition(self) -> bool:
        host = self.rng.choice(["h2", "h3"])
        seconds = self.rng.uniform(0.5, 2.5 * NODE_TIMEOUT_S)  # some past the node timeout
        self.c.net.partition(host)
        self.note(f"partitioned {host} for {seconds:.1f} s")
        time.sleep(seconds)
        self.c.net.heal(host)
        self.note(f"healed {host}")
        if seconds > NODE_TIMEOUT_S:
            self.counts["partition_past_node_timeout"] += 1
        return True

    def restart_head(self) -> bool:
        proc = self.c.head_process()
        if proc is None or not self._kill(proc, "the head"):
            return False
        time.sleep(self.rng.uniform(0.2, 2.0))
        self._start("h1", head=True)
        return True

    def _start(self, host: str, head: bool = False) -> None:
        for attempt in range(5):
            try:
                self.c.start(host, head=head)
                self.note(f"started {'the head' if head else 'the node'} in {host} again")
                return
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                self.counts["start_retried"] += 1
                self.note(f"start in {host} failed (attempt {attempt + 1}): {exc}")
                time.sleep(1)
        raise RuntimeError(f"could not start the node in {host} again")

    def run(self, seconds: float) -> None:
        """Faults until `seconds` have passed: each kind at least once, in random order,
        then random ones, with random pauses between them."""
        deadline = time.monotonic() + seconds
        plan = list(FAULTS)
        self.rng.shuffle(plan)
        misses = 0
        while time.monotonic() < deadline or plan:
            planned = bool(plan)
            fault = plan.pop() if plan else self.rng.choices(FAULTS, WEIGHTS)[0]
            if getattr(self, fault)():
                self.counts[fault] += 1
            else:
                self.counts[f"{fault}_found_nothing"] += 1
                if planned and misses < 5:  # nothing to hit just now: try it again later
                    misses += 1
                    plan.insert(0, fault)
            time.sleep(self.rng.uniform(0.2, 1.5))

    def restore(self, timeout: float = 90) -> None:
        """Every host healed and running its node, the head up; waits until the head
        sees the three nodes alive."""
        self.c.net.heal()
        if self.c.head_process() is None:
            self._start("h1", head=True)
        for host in self.c.hosts:
            if self.c.node_manager(host) is None:
                self._start(host)
        deadline = time.monotonic() + timeout
        while self.c.alive_hosts() != set(self.c.hosts):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not recover: {self.c.status()}")
            time.sleep(0.5)


def _ledger(path: str) -> tuple[dict[tuple[str, int], Any], dict[tuple[str, int], list[str]]]:
    effects = {}
    for name in os.listdir(os.path.join(path, "effects")):
        kind, key = name.split(".")
        with open(os.path.join(path, "effects", name)) as f:
            effects[(kind, int(key))] = json.load(f)
    runs: dict[tuple[str, int], list[str]] = collections.defaultdict(list)
    for name in os.listdir(os.path.join(path, "runs")):
        kind, key, _pid, _ns = name.split(".")
        with open(os.path.join(path, "runs", name)) as f:
            runs[(kind, int(key))].append(f.read())
    return effects, runs


def check(report: dict[str, Any], ledger: str) -> tuple[list[str], dict[str, int]]:
    """What went wrong (nothing, if all is well), and counts of each outcome."""
    problems = list(report["problems"])
    effects, runs = _ledger(ledger)
    outcomes: collections.Counter[str] = collections.Counter()
    submitted = set()
    for kind, key, phase, outcome in report["outcomes"]:
        submitted.add((kind, key))
        outcomes[f"{phase} {kind}: {outcome}"] += 1
        if outcome == "ok" and (kind, key) not in effects:
            problems.append(f"{kind} {key}: a value came back but its effect is missing")
    for kind, key in effects:
        if (kind, key) not in submitted:
            problems.append(f"{kind} {key}: an effect for work never submitted")
    for (kind, key), tids in runs.items():
        if kind in AT_MOST_ONCE and len(tids) > 1:
            problems.append(f"{kind} {key}: ran {len(tids)} times, may run at most once")
        if len(set(tids)) > 1:
            problems.append(f"{kind} {key}: runs of one key under task ids {sorted(set(tids))}")
        if len(tids) > 1:
            outcomes[f"{kind}: re-executed"] += 1
    if report["final_hosts"] != ["h1", "h2", "h3"]:
        problems.append(f"after the chaos, tasks ran only on {report['final_hosts']}")
    return problems, dict(sorted(outcomes.items()))


def leaks(cluster: SoakCluster, timeout: float = 20) -> list[str]:
    """What the stopped cluster left behind: processes in the hosts, the directories
    of every node it ran (session with spill files; store: shared-memory segments).
    Only these nodes': other tests on this machine make and remove their own."""
    deadline = time.monotonic() + timeout
    while True:
        left = {h: cluster.net.pids(h) for h in cluster.hosts}
        left = {h: p for h, p in left.items() if p}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    found = []
    for host, pids in left.items():
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                found.append(f"process {pid} in {host}: {' '.join(psutil.Process(pid).cmdline())}")
    cluster.remember_dirs()
    found += [f"directory {d}" for d in sorted(cluster.dirs) if os.path.exists(d)]
    return found


def soak(
    net: Testnet,
    env: dict[str, str],
    workdir: str,
    seconds: float,
    seed: int,
    port: int = 6380,
    get_timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole soak on `net` (up, with h1..h3): returns the report, its "problems"
    empty when all is well. Stops the cluster before it returns."""
    ledger = os.path.join(workdir, "ledger")
    for sub in ("effects", "runs"):
        os.makedirs(os.path.join(ledger, sub), exist_ok=True)
    cluster = SoakCluster(net, env, f"sqlite:///{workdir}/head.db", port)
    rng = random.Random(seed)
    chaos = Chaos(cluster, rng, log, ledger)
    started = time.monotonic()
    driver = None
    try:
        cluster.start("h1", head=True)
        for host in ("h2", "h3"):
            cluster.start(host)
        argv = [sys.executable, "-c", textwrap.dedent(WORKLOAD), ledger, str(seed)]
        argv += [",".join(ALLOWED), str(get_timeout)]
        driver = subprocess.Popen(
            net.command("h1", *argv),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(os.path.join(workdir, "driver.err"), "w"),
            text=True,
        )
        assert driver.stdout is not None
        assert driver.stdin is not None
        line = driver.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"the workload did not start: {line}{_tail(workdir)}")
        chaos_started = time.monotonic()
        chaos.run(seconds)
        chaos_s = time.monotonic() - chaos_started
        chaos.restore()
        driver.stdin.write("stop\n")
        driver.stdin.flush()
        out, _ = driver.communicate(timeout=600)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if driver.returncode != 0 or not lines:
            raise RuntimeError(f"the workload failed ({driver.returncode}):\n{out}{_tail(workdir)}")
        report = json.loads(lines[-1])
        with open(os.path.join(workdir, "errors.txt"), "w") as f:
            f.write("\n".join(report["details"]) + "\n")
        problems, outcomes = check(report, ledger)
        # A new driver finds the detached actor by name, through the (restarted) head.
        r = net.run("h2", sys.executable, "-c", CHECK_DETACHED, env=env, timeout=120)
        if r.returncode != 0:
            problems.append(f"the detached actor was not found after the chaos: {r.stderr[-2000:]}")
        alive = cluster.alive_hosts()
        if alive != set(cluster.hosts):
            problems.append(f"raylite status after the chaos: alive {sorted(alive)}")
        if problems:
            cluster.keep_logs(workdir)
        cluster.stop_all()
        problems += [f"leaked {what}" for what in leaks(cluster)]
    except BaseException:
        cluster.keep_logs(workdir)
        raise
    finally:
        with open(os.path.join(workdir, "faults.txt"), "w") as f:
            f.write("\n".join(chaos.trace) + "\n")
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        net.heal()
        cluster.stop_all()
    return {
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
        "chaos_seconds": round(chaos_s, 1),
        "rounds": report["rounds"],
        "faults": dict(sorted(chaos.counts.items())),
        "outcomes": outcomes,
        "problems": problems,
    }


def _tail(workdir: str) -> str:
    with contextlib.suppress(OSError), open(os.path.join(workdir, "driver.err")) as f:
        return f.read()[-4000:]
    return ""
