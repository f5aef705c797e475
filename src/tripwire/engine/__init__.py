"""The pure event-time engine."""

from tripwire.engine.core import ACCEPTED, DUPLICATE, LATE, Decision, Engine
from tripwire.engine.fire import Fire, make_fire_id

__all__ = ["ACCEPTED", "DUPLICATE", "LATE", "Decision", "Engine", "Fire", "make_fire_id"]
