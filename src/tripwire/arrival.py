"""How an event arrives at tripwire, by any receiver (the HTTP ingest now, a Kafka topic in
the cluster): what the receiver stamps, and what it refuses before the engine sees it.

Apart from the pure parser (`tripwire.events`), since it draws a random messageId.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from tripwire.errors import EventError
from tripwire.events import Event, parse_event

# An event stamped further ahead than this would drag the watermark into the future and
# make every other user's events late, so it is refused as bad input instead.
MAX_FUTURE_MS: Final = 24 * 3_600_000


def receive_event(event: dict[str, Any], *, now: int, received_at: str, skew_tolerance: int) -> Event:
    """An event arriving at tripwire (over HTTP, from a topic): stamp what the receiver owns
    (`receivedAt`, a missing `messageId`), validate, correct skew, and refuse a time more
    than `MAX_FUTURE_MS` ahead of `now`. `event` is changed in place."""
    event.pop("writeKey", None)  # never stored, so /api/events cannot show it
    event["receivedAt"] = received_at
    if event.get("messageId") is None:
        event["messageId"] = str(uuid.uuid4())
    parsed = parse_event(event, skew_tolerance=skew_tolerance)
    if parsed.ts > now + MAX_FUTURE_MS:
        raise EventError(
            "timestamp",
            f"{event['timestamp']} is more than 24h after the server received the event "
            f"({event['receivedAt']}): the timestamp is in the future; check the client clock",
        )
    return parsed


def batch_member(item: dict[str, Any], sent_at: Any, context: dict[str, Any] | None) -> dict[str, Any]:
    """An event of a batch with the batch's `sentAt` (unless its own) and `context` (merged
    by top-level key, the event's own winning); a copy, `item` is left as it was."""
    event = dict(item)
    if sent_at is not None and event.get("sentAt") is None:
        event["sentAt"] = sent_at
    if context is not None:
        own = item.get("context")
        if own is None:
            event["context"] = dict(context)
        elif isinstance(own, dict):
            event["context"] = {**context, **own}  # otherwise parse_event names the field
    return event
