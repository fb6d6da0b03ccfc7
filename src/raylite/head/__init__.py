"""The head: the cluster's metadata service, one per cluster.

Owns the cluster metadata (the node table and node liveness, the actor table and
actor names, the job counter), the storage backends it writes them through to
(memory, SQLite, Redis), and the head's half of restarting detached actors whose
owner is gone. Not leases, workers or objects: those are each node's (node/).

    head.py       Head, NodeRec, ActorRec: the tables and their request handlers
    storage.py    HeadStorage and its backends; open_storage(url) picks one
    detached.py   the head's half of detached-actor restarts (the node's: node/detached.py)
    node_port.py  NodePort: all the head uses of the node manager it lives in

The head runs in the event loop of one node manager and reaches it only through
NodePort, so nothing here imports the node package.
"""

from .head import Head
from .storage import open_storage

__all__ = ["Head", "open_storage"]
