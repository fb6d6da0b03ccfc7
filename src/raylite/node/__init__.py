"""The node: one node manager per machine, and the files that find it.

    manager.py       NodeManager: serving, the handler table, clients, background
                     tasks, state queries, shutdown; main() (`python -m raylite.node`)
    pool.py          the worker pool: starting, output, exits, stopping
    forkserver.py    the single-threaded process that forks and reaps the workers
    leases.py        resources and leases: requests, placement, grants, blocked leases
    store.py         the object store's accounting: segments, spilling, recycling
    transfer.py      objects between nodes: pulls and sends
    cluster_link.py  the link to the head and to the other node managers
    detached.py      the node's half of detached-actor restarts
    local.py         the nodes `raylite start` runs on this machine (files in /tmp)

NodeManager is one object built from the mixins in pool, leases, store, transfer and
cluster_link; each of those modules says which of its attributes it owns. The head
(head/) runs in the event loop of one node manager, which it reaches through
head/node_port.py. Importing this package imports nothing more: drivers and the CLI
read local.py without loading the node manager.
"""
