"""Several private "hosts" on one Linux machine, for multi-node tests (the testnet).

Owns the network namespaces of one testnet: hosts h1..hN, each a namespace
"<name>-hK" with a loopback and one interface, eth0 (address <prefix>.K/24), cabled
to a bridge in its own namespace "<name>-sw". The bridge has no uplink and the hosts
no default route, so no packet leaves the machine. Not what runs in the hosts (the
tests start raylite there) nor anything in the machine's own network namespace
(unless gateway=True puts the machine on the bridge at <prefix>.254).

    h1 eth0 ──veth── p1 ┐
    h2 eth0 ──veth── p2 ├─ br0 (namespace <name>-sw)   partition hK: pK down
    h3 eth0 ──veth── p3 ┘                               cut hA hB: bogus neighbour MACs

Neighbour entries are static, so a partitioned or cut peer shows up as a timeout,
never as "no route to host"; a host whose processes were killed answers "connection
refused". Partitions and cuts only drop packets: open connections stall and resume on
heal unless TCP gives up first. Processes in a host share the machine's pid namespace
and file system (so /dev/shm and /tmp too); only the network is private.

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2's `ip`; `Testnet.unusable()`
says why not where either is missing, and the tests skip with that reason. The same
commands from a shell, as the test suite runs them:

    sudo python tests/netns.py up 3          # h1..h3 = 10.77.0.1..3
    sudo python tests/netns.py exec h1 python3 -m raylite.cli start --head ...
    sudo python tests/netns.py partition h3; sudo python tests/netns.py heal h3
    sudo python tests/netns.py status; sudo python tests/netns.py down

Exit status 77 means "not usable here" (a test runner's skip).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

NETNS_DIR = "/var/run/netns"  # where iproute2 keeps named namespaces
GW_HOST = 254
MASK = 24
UNUSABLE = 77  # the exit status that says "skip"


class TestnetError(RuntimeError):
    """An `ip` command failed on a machine where the testnet should work."""


def _find_ip() -> str | None:
    found = shutil.which("ip")
    if found:
        return found
    for candidate in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class Testnet:
    """One testnet, named `name` (distinct names run side by side) on `prefix`.0/24."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self,
        name: str = "tn",
        prefix: str = "10.77.0",
        *,
        gateway: bool = False,
        grace: float = 2.0,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,11}", name):
            raise ValueError(f"testnet name {name!r}: use 1-12 characters from [A-Za-z0-9_-]")
        octets = prefix.rstrip(".").split(".")
        if len(octets) != 3 or not all(o.isdigit() and int(o) <= 255 for o in octets):
            raise ValueError(f"testnet prefix {prefix!r}: expected three octets, e.g. 10.77.0")
        self.name = name
        self.octets = [int(o) for o in octets]
        self.prefix = ".".join(map(str, self.octets))
        self.gateway = gateway
        self.grace = grace
        self.switch = f"{name}-sw"
        self.gw = f"{name}-gw"
        self.ip = _find_ip() or "ip"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Testnet:
        """The testnet named by TESTNET_NAME / TESTNET_PREFIX (a process inside a host
        reaching its neighbours finds its testnet so)."""
        env = dict(os.environ if env is None else env)
        return cls(
            env.get("TESTNET_NAME", "tn"),
            env.get("TESTNET_PREFIX", "10.77.0"),
            gateway=env.get("TESTNET_GATEWAY", "0") == "1",
            grace=float(env.get("TESTNET_GRACE", "2")),
        )

    def env(self) -> dict[str, str]:
        """Variables that make `from_env` in a child find this testnet."""
        return {"TESTNET_NAME": self.name, "TESTNET_PREFIX": self.prefix}

    # --- names ---------------------------------------------------------------------------
    def number(self, host: str) -> int:
        k = host[1:] if host.startswith("h") else host
        if not k.isdigit() or not 1 <= int(k) <= 253:
            raise ValueError(f"bad host name {host!r} (expected h1..h253)")
        return int(k)

    def namespace(self, host: str) -> str:
        return f"{self.name}-h{self.number(host)}"

    def addr(self, host: str) -> str:
        return f"{self.prefix}.{self.number(host)}"

    def mac(self, k: int, first: str = "02") -> str:
        o1, o2, o3 = self.octets
        return f"{first}:00:{o1:02x}:{o2:02x}:{o3:02x}:{k:02x}"

    def hosts(self) -> list[str]:
        """The hosts that exist now, ascending."""
        pattern = re.compile(rf"{re.escape(self.name)}-h(\d+)")
        try:
            names = os.listdir(NETNS_DIR)
        except OSError:
            return []
        numbers = sorted(int(m.group(1)) for n in names if (m := pattern.fullmatch(n)))
        return [f"h{k}" for k in numbers]

    def _namespaces(self) -> list[str]:
        ours = [self.namespace(h) for h in self.hosts()]
        if os.path.exists(os.path.join(NETNS_DIR, self.switch)):
            ours.insert(0, self.switch)
        return ours

    # --- running ip ----------------------------------------------------------------------
    def _ip(self, *args: str, ns: str = "", batch: str = "", check: bool = True) -> str:
        cmd = [self.ip, *(["-n", ns] if ns else []), *args]
        if batch:
            cmd += ["-batch", "-"]
        r = subprocess.run(
            cmd, input=batch or None, capture_output=True, text=True, timeout=60, check=False
        )
        if check and r.returncode != 0:
            raise TestnetError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()}")
        return r.stdout

    # --- checks --------------------------------------------------------------------------
    def unusable(self) -> str | None:
        """None where a testnet can be built here, else why not (a test's skip reason)."""
        if platform.system() != "Linux":
            return "Linux network namespaces are required"
        if os.geteuid() != 0:
            return "must run as root (needs CAP_SYS_ADMIN and CAP_NET_ADMIN for network namespaces)"
        if not os.path.exists("/proc/self/ns/net"):
            return "the kernel has no network namespaces (/proc/self/ns/net missing)"
        if _find_ip() is None:
            return "the 'ip' command is missing (Debian package: iproute2)"
        probe = f"{self.name}-probe{os.getpid()}"
        steps = [
            (["netns", "add", probe], "cannot create a network namespace"),
            (["-n", probe, "link", "add", "b0", "type", "bridge"], "cannot create a bridge"),
            (
                ["-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                "cannot create a veth pair",
            ),
            (
                ["-n", probe, "link", "set", "v0", "master", "b0"],
                "cannot attach a veth to a bridge",
            ),
        ]
        try:
            for args, what in steps:
                r = subprocess.run(
                    [self.ip, *args], capture_output=True, text=True, timeout=30, check=False
                )
                if r.returncode != 0:
                    return f"{what}: {r.stderr.strip()}"
        finally:
            subprocess.run(
                [self.ip, "netns", "del", probe], capture_output=True, timeout=30, check=False
            )
        return None

    # --- up and down ---------------------------------------------------------------------
    def up(self, n: int) -> list[str]:
        """Hosts h1..hn (a previous testnet of this name is removed first)."""
        if not 1 <= n <= 253:
            raise ValueError(f"up: n must be 1..253, not {n}")
        self.down()
        try:
            self._build(n)
        except BaseException:
            self.down()
            raise
        return [f"h{k}" for k in range(1, n + 1)]

    def _build(self, n: int) -> None:
        if self.gateway and self._ip("-4", "route", "show", f"{self.prefix}.0/{MASK}").strip():
            raise TestnetError(f"{self.prefix}.0/{MASK} is already routed on this machine")
        self._ip("netns", "add", self.switch)
        self._ip(
            "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0",
            ns=self.switch,
        )  # fmt: skip
        for k in range(1, n + 1):
            self._ip("netns", "add", f"{self.name}-h{k}")
        # The switch: one veth per host, the host's end created directly in the host.
        lines = []
        for k in range(1, n + 1):
            lines.append(
                f"link add p{k} type veth peer name eth0 netns {self.name}-h{k} "
                f"address {self.mac(k)}"
            )
            lines += [f"link set p{k} master br0", f"link set p{k} up"]
        if self.gateway:
            self._ip(
                "link", "add", self.gw, "address", self.mac(GW_HOST), "type", "veth",
                "peer", "name", "gw", "netns", self.switch,
            )  # fmt: skip
            lines += ["link set gw master br0", "link set gw up"]
        lines.append("link set br0 up")
        self._ip(ns=self.switch, batch="\n".join(lines) + "\n")
        # Hosts: loopback, address, a static neighbour entry for every other member.
        members = list(range(1, n + 1)) + ([GW_HOST] if self.gateway else [])
        for k in range(1, n + 1):
            lines = ["link set lo up", f"addr add {self.prefix}.{k}/{MASK} dev eth0"]
            lines.append("link set eth0 up")
            for j in members:
                if j != k:
                    lines.append(
                        f"neigh replace {self.prefix}.{j} lladdr {self.mac(j)} dev eth0 "
                        "nud permanent"
                    )
            self._ip(ns=f"{self.name}-h{k}", batch="\n".join(lines) + "\n")
        if self.gateway:
            lines = [f"addr add {self.prefix}.{GW_HOST}/{MASK} dev {self.gw}"]
            lines.append(f"link set {self.gw} up")
            for k in range(1, n + 1):
                lines.append(
                    f"neigh replace {self.prefix}.{k} lladdr {self.mac(k)} dev {self.gw} "
                    "nud permanent"
                )
            self._ip(batch="\n".join(lines) + "\n")

    def down(self) -> None:
        """Stop every process in the hosts (TERM, then KILL after `grace`) and delete
        every namespace of this testnet; safe to repeat."""
        if self._ip("link", "show", "dev", self.gw, check=False).strip():
            self._ip("link", "del", "dev", self.gw, check=False)
        namespaces = self._namespaces()
        if not namespaces:
            return
        pids = self._pids_in(namespaces)
        if pids:
            self._signal(pids, signal.SIGTERM)
            if not self._wait_empty(namespaces, self.grace):
                self._signal(self._pids_in(namespaces), signal.SIGKILL)
                self._wait_empty(namespaces, 5)
        left = []
        for ns in namespaces:
            self._ip("netns", "del", ns, check=False)
            if os.path.exists(os.path.join(NETNS_DIR, ns)):
                left.append(ns)
        if left:
            raise TestnetError(f"could not delete namespaces {left}")

    # --- processes -----------------------------------------------------------------------
    def command(self, host: str, *argv: str) -> list[str]:
        """argv run in `host` (for Popen: the child's pid is the command's own pid, as
        `ip netns exec` and `env` exec it). It sees TESTNET_HOST and TESTNET_ADDR."""
        ns = self.namespace(host)
        if not os.path.exists(os.path.join(NETNS_DIR, ns)):
            raise TestnetError(f"no host {host} (namespace {ns} missing; is the testnet up?)")
        host_env = [f"TESTNET_HOST=h{self.number(host)}", f"TESTNET_ADDR={self.addr(host)}"]
        return [self.ip, "netns", "exec", ns, "env", *host_env, *argv]

    def run(
        self,
        host: str,
        *argv: str,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        check: bool = False,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in `host` to its end; its output, as text."""
        return subprocess.run(
            self.command(host, *argv),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            cwd=cwd,
        )

    def pids(self, host: str) -> list[int]:
        """Live processes whose network namespace is `host`'s."""
        return self._pids_in([self.namespace(host)])

    def _pids_in(self, namespaces: Sequence[str]) -> list[int]:
        pids: list[int] = []
        for ns in namespaces:
            out = self._ip("netns", "pids", ns, check=False)
            pids += [int(p) for p in out.split() if p.isdigit()]
        return pids

    @staticmethod
    def _signal(pids: Sequence[int], sig: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _wait_empty(self, namespaces: Sequence[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._pids_in(namespaces):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def kill(self, host: str, sig: int = signal.SIGKILL) -> None:
        """Signal everything running in `host`; for SIGKILL, wait until all are gone."""
        ns = self.namespace(host)
        self._signal(self._pids_in([ns]), sig)
        if sig == signal.SIGKILL and not self._wait_empty([ns], 5):
            raise TestnetError(f"processes still alive in {host}: {self._pids_in([ns])}")

    # --- the network ---------------------------------------------------------------------
    def partition(self, *hosts: str) -> None:
        """Unplug each host: its packets are dropped, its peers time out."""
        for host in hosts:
            self._ip("link", "set", "dev", f"p{self.number(host)}", "down", ns=self.switch)

    def heal(self, *hosts: str) -> None:
        """Plug the hosts back in; with none named, every host, and every cut restored."""
        if hosts:
            for host in hosts:
                self._ip("link", "set", "dev", f"p{self.number(host)}", "up", ns=self.switch)
            return
        every = self.hosts()
        if every:
            self.heal(*every)
        for a in every:
            for b in self.cuts(a):
                self._set_cut(self.number(a), self.number(b), cut=False)

    def cut(self, a: str, b: str) -> None:
        """Drop traffic between a and b only (both still reach every other host)."""
        self._set_cut(self.number(a), self.number(b), cut=True)

    def uncut(self, a: str, b: str) -> None:
        self._set_cut(self.number(a), self.number(b), cut=False)

    def _set_cut(self, a: int, b: int, *, cut: bool) -> None:
        # Each keeps a static neighbour entry for the other that points at a MAC nobody
        # has (06:... instead of 02:...): their frames to each other are flooded by the
        # bridge and dropped everywhere, in both directions.
        if a == b:
            raise ValueError(f"h{a} and h{b} are the same host")
        for x, y in ((a, b), (b, a)):
            mac = self.mac(y, first="06" if cut else "02")
            self._ip(
                "neigh", "replace", f"{self.prefix}.{y}", "lladdr", mac, "dev", "eth0",
                "nud", "permanent", ns=f"{self.name}-h{x}",
            )  # fmt: skip

    def cuts(self, host: str) -> list[str]:
        """The hosts `host` is cut from."""
        out = self._ip("neigh", "show", "dev", "eth0", ns=self.namespace(host), check=False)
        found = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].startswith("06:00:"):
                found.append(int(parts[0].rsplit(".", 1)[1]))
        return [f"h{k}" for k in sorted(found)]

    def is_partitioned(self, host: str) -> bool:
        out = self._ip("-o", "link", "show", "dev", f"p{self.number(host)}", ns=self.switch)
        return re.search(r"<([A-Z_,]*,)?UP[,>]", out) is None

    def status(self) -> list[str]:
        """ "hK ADDR up|partitioned NPROCS [cut:hA,...]" per host."""
        rows = []
        for host in self.hosts():
            state = "partitioned" if self.is_partitioned(host) else "up"
            row = f"{host} {self.addr(host)} {state} {len(self.pids(host))}"
            cuts = self.cuts(host)
            rows.append(row + (f" cut:{','.join(cuts)}" if cuts else ""))
        return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check")
    sub.add_parser("up").add_argument("n", type=int)
    sub.add_parser("down")
    ex = sub.add_parser("exec")
    ex.add_argument("host")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    for name in ("partition", "heal"):
        sub.add_parser(name).add_argument("hosts", nargs="*")
    for name in ("cut", "uncut"):
        p = sub.add_parser(name)
        p.add_argument("a")
        p.add_argument("b")
    k = sub.add_parser("kill")
    k.add_argument("host")
    k.add_argument("signal", nargs="?", default="KILL")
    sub.add_parser("status")
    args = parser.parse_args(argv)
    net = Testnet.from_env()
    why = net.unusable() if args.cmd in ("check", "up") else None
    if why:
        print(f"testnet: not usable here: {why}", file=sys.stderr)
        return UNUSABLE
    try:
        if args.cmd == "check":
            print("testnet: ok (network namespaces, veth and bridge usable)")
        elif args.cmd == "up":
            for host in net.up(args.n):
                print(host, net.addr(host))
        elif args.cmd == "down":
            net.down()
        elif args.cmd == "exec":
            cmd = net.command(args.host, *args.argv)
            os.execv(cmd[0], cmd)
        elif args.cmd == "partition":
            net.partition(*args.hosts)
        elif args.cmd == "heal":
            net.heal(*args.hosts)
        elif args.cmd in ("cut", "uncut"):
            getattr(net, args.cmd)(args.a, args.b)
        elif args.cmd == "kill":
            name = args.signal.upper()
            net.kill(
                args.host,
                int(name) if name.isdigit() else signal.Signals[f"SIG{name.removeprefix('SIG')}"],
            )
        elif args.cmd == "status":
            print("\n".join(net.status()))
    except (TestnetError, ValueError) as exc:
        print(f"testnet: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
