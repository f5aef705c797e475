"""Per-user state the engine owns; small slotted objects, because there are many users."""

from __future__ import annotations

from typing import Any, Final

UNKEYED: Final = ("_",)
"""The key of an unkeyed trigger's only window or count list."""


class CountList:
    """The matching events of a count trigger still inside its window.

    `orders` holds each event's place in the reference order, so that two users' lists
    can be merged as if they had been one user's.
    """

    __slots__ = ("ids", "key", "orders", "times")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.times: list[int] = []
        self.ids: list[str] = []
        self.orders: list[int] = []

    def drop_until(self, cutoff: int) -> None:
        """Drop the events at or before `cutoff`: they left the window."""
        times = self.times
        drop = 0
        while drop < len(times) and times[drop] <= cutoff:
            drop += 1
        if drop:
            del times[:drop]
            del self.ids[:drop]
            del self.orders[:drop]


class Timer:
    """An open absence window or an inactivity deadline.

    `seq` orders timers set in the same millisecond and tells a live heap entry
    from one left behind when the deadline moved. An absence window keeps the place in
    the reference order of each of its `when` events in `orders` (for merges).
    """

    __slots__ = ("deadline", "ids", "key", "orders", "seq")

    def __init__(self, key: Any, deadline: int, ids: list[str], seq: int, orders: list[int] | None = None) -> None:
        self.key = key
        self.deadline = deadline
        self.ids = ids
        self.seq = seq
        self.orders = orders


class UserState:
    """Everything the engine remembers of one user.

    `slots[i]` holds trigger i's state: None, a CountList or Timer (unkeyed), or a
    dict from canonical key to one of them (keyed). `history[g]` holds the times of
    the user's latest activities matching guard pattern g, as many as a guard needs.
    """

    __slots__ = ("history", "last_fire", "slots", "traits", "uid")

    def __init__(self, uid: str, n_triggers: int) -> None:
        self.uid = uid
        self.traits: dict[str, Any] | None = None
        self.slots: list[Any] = [None] * n_triggers
        self.history: dict[int, list[int]] | None = None
        self.last_fire: dict[int, int] | None = None

    def is_empty(self) -> bool:
        return (
            self.traits is None
            and self.history is None
            and self.last_fire is None
            and all(slot is None for slot in self.slots)
        )
