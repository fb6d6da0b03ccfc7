"""Placement group bundles as resources: the names a bundle adds to its node.

Owns the naming, as Ray names them: a bundle of placement group G, index i,
committed on a node adds `R_group_i_G` for each resource R of the bundle (and the
wildcard `R_group_G`, summed over G's bundles there), plus `bundle_group_i_G` /
`bundle_group_G` (BUNDLE_UNITS each), which every task placed in the group asks a
sliver of, so even a task of no resources lands where its bundle is. A task in
bundle i (or any bundle: index -1) asks for the renamed resources instead of its
own: the lease book, the scheduler and the views need no other notion of a group,
and a task in a 1-CPU bundle waits while another holds that CPU even if the node
has free CPUs. Pure names and arithmetic; not the group's lifecycle
(head/placement_groups.py), not the node's reservations (node/bundle_book.py).

    bundle {"CPU": 1} of G, index 0 ──commit──▶ node: CPU -1,
        CPU_group_0_G +1, CPU_group_G +1, bundle_group_0_G, bundle_group_G
    task num_cpus=1 in (G, 0) ──▶ {"CPU_group_0_G": 1, "CPU_group_G": 1,
                                   "bundle_group_0_G", "bundle_group_G": a sliver each}
"""

from __future__ import annotations

from .config import RESOURCE_UNIT

GROUP = "_group_"
BUNDLE = "bundle"
BUNDLE_UNITS = 1000 * RESOURCE_UNIT  # what one bundle adds of `bundle_group_*` (Ray: 1000)
SLIVER = RESOURCE_UNIT // 1000  # what each task placed in a bundle asks of it (Ray: 0.001)


def is_group_resource(name: str) -> bool:
    """A resource a placement group's bundle adds (hidden from cluster_resources())."""
    return GROUP in name


def task_shape(shape: dict[str, int], pg_hex: str, index: int) -> dict[str, int]:
    """What a task of `shape` asks for, placed in bundle `index` of group `pg_hex`
    (-1: any of its bundles)."""
    # The wildcard always (what the group has here in all), the bundle's own too when
    # one is named: both stay true however tasks of either kind come and go (Ray's).
    wild = f"{GROUP}{pg_hex}"
    out = {f"{k}{wild}": v for k, v in shape.items() if v}
    out[f"{BUNDLE}{wild}"] = SLIVER
    if index >= 0:
        own = f"{GROUP}{index}_{pg_hex}"
        out.update({f"{k}{own}": v for k, v in shape.items() if v})
        out[f"{BUNDLE}{own}"] = SLIVER
    return out


def node_resources(bundles: dict[int, dict[str, int]], pg_hex: str) -> dict[str, int]:
    """What the bundles of one group committed on one node add to it."""
    out: dict[str, int] = {}
    for index, bundle in bundles.items():
        for k, v in {**bundle, BUNDLE: BUNDLE_UNITS}.items():
            out[f"{k}{GROUP}{index}_{pg_hex}"] = v
            wildcard = f"{k}{GROUP}{pg_hex}"
            out[wildcard] = out.get(wildcard, 0) + v
    return out


def group_of(shape: dict[str, int]) -> str | None:
    """The group (hex) a lease shape asks resources of, if any."""
    for name in shape:
        if name.startswith(BUNDLE + GROUP):
            return name.rpartition("_")[2]
    return None


def visible(resources: dict[str, float]) -> dict[str, float]:
    """Without the groups' names, as Ray's cluster_resources() shows them."""
    return {k: v for k, v in resources.items() if GROUP not in k}
