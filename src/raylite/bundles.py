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


# --- GPU ids of bundles ---------------------------------------------------------------
# A committed bundle with GPUs holds GPU ids of its node (node/bundle_book.py takes them
# at prepare). A task placed in it gets ids from those, as a task outside any group gets
# them from the node's: the lease book keeps `group_gpus`, bundle resource name ->
# {GPU id: units free}, and calls these two for shapes without a plain "GPU".
GPU_GROUP = "GPU" + GROUP


class BundleGpus(list[int]):
    """GPU ids taken from a bundle's; remembers which bundle, to give them back."""

    bundle = ""


def take_gpus(group_gpus: dict[str, dict[int, int]], shape: dict[str, int]) -> list[int]:
    """GPU ids for a lease of `shape` from its bundle's (any of the group's bundles here
    for a wildcard), packing shares as the node does; [] if it asks no GPU."""
    keys = [k for k in shape if k.startswith(GPU_GROUP)]
    if not keys:
        return []
    units = shape[keys[0]]
    own = [k for k in keys if k in group_gpus]
    if own:
        candidates = own
    else:  # the wildcard: a bundle of that group with room
        suffix = "_" + keys[0].rpartition("_")[2]
        candidates = [k for k in group_gpus if k.endswith(suffix)]
    whole = -(-units // RESOURCE_UNIT)
    for key in candidates:
        free = group_gpus[key]
        if units < RESOURCE_UNIT:
            gpu = next((i for i in sorted(free) if free[i] >= units), None)
            if gpu is None:
                continue
            free[gpu] -= units
            ids = BundleGpus([gpu])
        else:
            chosen = [i for i in sorted(free) if free[i] == RESOURCE_UNIT][:whole]
            if len(chosen) < whole:
                continue
            for i in chosen:
                free[i] = 0
            ids = BundleGpus(chosen)
        ids.bundle = key
        return ids
    return []  # the units fit (the book counted them) but not as whole GPUs: none named


def give_gpus(group_gpus: dict[str, dict[int, int]], shape: dict[str, int], ids: list[int]) -> None:
    """A lease's GPU ids go back to its bundle (nothing if the bundle is gone)."""
    free = group_gpus.get(getattr(ids, "bundle", ""))
    if free is None:
        return
    units = next((v for k, v in shape.items() if k.startswith(GPU_GROUP)), 0)
    share = units if units < RESOURCE_UNIT else RESOURCE_UNIT
    for i in ids:
        if i in free:
            free[i] += share


def visible(resources: dict[str, float]) -> dict[str, float]:
    """Without the groups' names, as Ray's cluster_resources() shows them."""
    return {k: v for k, v in resources.items() if GROUP not in k}
