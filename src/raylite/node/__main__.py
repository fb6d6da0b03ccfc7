"""`python -m raylite.node ...`: this machine's node manager (manager.main).

The fork server is forked as soon as the modules that workers and the node manager
both use are loaded (the wire, transport, store client, serialization): those pages
are shared. Then it loads the worker's modules (the core worker, the API) while this
process loads the node manager's (head, store, leases), each on a core of its own, so
neither holds the other's modules and the node is ready sooner."""

if __name__ == "__main__":
    import gc

    from .. import object_store, protocol, serialization, task_events, transport  # noqa: F401
    from . import forkserver

    # Shared pages stay shared only if neither process writes them: a collection in
    # either would write the header of every object it visits. Frozen, these objects
    # (the shared modules' own) are never visited again.
    gc.freeze()
    forks = forkserver.start()
    from .manager import main

    main(forks=forks)
