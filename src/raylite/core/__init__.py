"""The core worker: one per process (driver or worker), Ray's ownership model.

core_worker.CoreWorker is the facade and the only owner of the lock; the other
modules each hold one concept: context (the live worker, the current task),
tasks, objects, refs (counting and borrowing), lineage (freeing and rebuilding),
submission, lease_queue (pure: which lease runs which task) and its shell
leasing, actor_life (pure: an actor's lives, and what ends them) and its shell
actor_client, timers. This package's __init__ imports nothing, so
`raylite.core.context` stays importable from below the core.
"""
