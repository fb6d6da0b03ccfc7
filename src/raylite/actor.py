"""Ray's `ray.actor` names: ActorClass, ActorHandle, exit_actor."""

from .actors import ActorClass, ActorHandle, ActorMethod, exit_actor

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor"]
