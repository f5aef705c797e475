"""Fires: the engine's output, with an id derived only from what defines the fire."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from tripwire.rules.where import canonical
from tripwire.timestamps import format_ms

_encode = msgspec.json.Encoder(order="sorted").encode


def make_fire_id(trigger: str, user_id: str, key: Any, fire_time: int, events: tuple[str, ...]) -> str:
    """A stable id: the same trigger, user, key, fire time and events give the same id."""
    material = _encode([trigger, user_id, canonical(key), fire_time, list(events)])
    return hashlib.blake2b(material, digest_size=16).hexdigest()


class Fire(msgspec.Struct, frozen=True, gc=False):
    """A trigger holding for a user at `fire_time` (epoch ms), or its suppression.

    `detail` explains a suppression (which guard, or until when the cooldown runs);
    it is not part of the fire's identity.
    """

    trigger: str
    user_id: str
    key: Any
    fire_time: int
    fire_id: str
    events: tuple[str, ...]
    suppressed: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fire as SPEC §4 defines it, `fire_time` in ISO-8601 UTC."""
        return {
            "trigger": self.trigger,
            "user_id": self.user_id,
            "key": self.key,
            "fire_time": format_ms(self.fire_time),
            "fire_id": self.fire_id,
            "events": list(self.events),
            "suppressed": self.suppressed,
        }
