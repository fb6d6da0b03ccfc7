"""raylite.util.collective across 3 testnet hosts: one actor per host, allreduce (the
ring, over TCP between the hosts) and broadcast, checked against numpy."""

from __future__ import annotations

import pytest

from tests._engine import raylite_only

pytestmark = [pytest.mark.timeout(240), raylite_only]


def test_allreduce_and_broadcast_between_three_hosts(cluster):
    cluster.start_node("h1", head=True)
    for host in ("h2", "h3"):
        cluster.start_node(host)
    out = cluster.driver(
        "h1",
        """
        import socket
        import numpy as np
        import raylite.util.collective as col

        ray.init(address="auto")

        @ray.remote(num_cpus=0)
        class Member:
            def work(self, rank):
                col.init_collective_group(3, rank, backend="gloo", group_name="hosts")
                g = col.get_group_handle("hosts")
                families = sorted({s.family.name for s in g.peers.values()})
                big = np.arange(600_000, dtype=np.float64) * (rank + 1)  # past the ring's threshold
                col.allreduce(big, group_name="hosts")
                small = np.full(10, rank + 1, np.int32)
                col.allreduce(small, group_name="hosts", op=col.ReduceOp.MAX)
                b = np.full(1000, float(rank))
                col.broadcast(b, src_rank=2, group_name="hosts")
                col.barrier("hosts")
                col.destroy_collective_group("hosts")
                want = np.arange(600_000, dtype=np.float64) * 6
                return {"ip": ray.util.get_node_ip_address(), "families": families,
                        "ring_ok": bool(np.array_equal(big, want)),
                        "max": int(small[0]), "bcast": float(b.sum())}

        members = [Member.options(resources={h: 1}).remote() for h in ("h1", "h2", "h3")]
        got = ray.get([m.work.remote(r) for r, m in enumerate(members)], timeout=120)
        print(json.dumps({"got": got}))
        ray.shutdown()
        """,
        timeout=180,
    )
    got = out["got"]
    assert [g["ip"] for g in got] == ["10.78.0.1", "10.78.0.2", "10.78.0.3"]
    for g in got:
        assert g["families"] == ["AF_INET"]  # each peer on another host: TCP
        assert g["ring_ok"]
        assert g["max"] == 3
        assert g["bcast"] == 2000.0
