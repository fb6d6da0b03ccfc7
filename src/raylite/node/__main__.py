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
    import os
    import sys

    from .manager import main

    try:
        main(forks=forks)
        code = 0
    except SystemExit as exc:  # (a string's message is printed, as the interpreter does)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        if isinstance(exc.code, str):
            sys.stderr.write(f"{exc.code}\n")
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    # Its work is done (workers stopped, files removed, the fork server gone): it exits
    # without the interpreter's teardown, which frees every module's objects one by one
    # (~20 ms) while the driver's shutdown() waits for this process to end.
    import contextlib
    import logging

    with contextlib.suppress(Exception):  # (a closed pipe: nothing left to say anyway)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
