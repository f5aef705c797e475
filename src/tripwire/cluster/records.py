"""Kafka records as events: the arrival rules of `tripwire.events.receive_event`, applied to
what a topic holds, so that deciding a record again (a replay, a failover) decides it alike.

A record's value is one Segment event as JSON (what `tripwire serve --kafka` produces, or
what a team's own producers write). What the HTTP ingest stamps from its clock comes from
the record instead: `receivedAt` is kept when the producer set it (tripwire's ingest
does), else it is the record's timestamp; a missing `messageId` is derived from the
record's place in the topic, never made up at random.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from tripwire import limits
from tripwire.arrival import receive_event
from tripwire.errors import EventError
from tripwire.events import Event
from tripwire.timestamps import format_ms, parse_ms

if TYPE_CHECKING:
    from confluent_kafka._types import HeadersType  # what Message.headers() gives

MAX_RECORD_BYTES: Final = 32 * 1024  # as one event over HTTP
# The header of a quarantined event sent through again by an ingest node: the quarantine
# entry's id. Only an entry of the partition the record is in, not retried yet, counts.
RETRY_HEADER: Final = "tripwire-retry"
_decode_checked = msgspec.json.Decoder(limits.EVENT).decode
_decode = msgspec.json.decode
_encode = msgspec.json.encode


def partition_key(event: Event) -> bytes:
    """The record key of an event: its userId, else its anonymousId (one user, one partition)."""
    key = event.user_id if event.user_id is not None else event.anonymous_id
    assert key is not None  # parse_event requires one of them
    return key.encode()


def record_value(event: Event) -> bytes:
    """The record value for an event as tripwire received it (receivedAt and messageId set)."""
    return _encode(event.raw)


def retry_entry(headers: HeadersType | None) -> int | None:
    """The quarantine entry a record says it sends through again, if it says one."""
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    for name, value in pairs:
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if name == RETRY_HEADER and text is not None and text.isdigit() and len(text) < 19:
            return int(text)
    return None


def record_event(
    value: bytes | None, *, topic: str, partition: int, offset: int, timestamp_ms: int, skew_tolerance: int
) -> Event:
    """The event a record holds; EventError naming the field when it holds none."""
    if value is None:
        raise EventError("(record)", "the record has no value (a tombstone); a record holds one event as JSON")
    if len(value) > MAX_RECORD_BYTES:
        raise EventError(
            "(record)", f"the record is {len(value)} bytes; the limit is {MAX_RECORD_BYTES} bytes, as for one event"
        )
    obj: Any
    try:
        obj = _decode_checked(value)
    except (msgspec.DecodeError, RecursionError):
        try:  # past the fast check's depth, or not valid: `limits.check` or the decoder names it
            obj = _decode(value)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise EventError("(record)", f"the record is not valid JSON: {exc}") from None
        if isinstance(obj, dict):
            limits.check(obj)
    if not isinstance(obj, dict):
        raise EventError("(record)", f"a record holds a JSON object, not {type(obj).__name__}")
    received = obj.get("receivedAt")
    try:
        received_ms = parse_ms(received) if isinstance(received, str) else timestamp_ms
    except ValueError:
        raise EventError("receivedAt", f"{received!r} is not an ISO-8601 time") from None
    if obj.get("messageId") is None:
        obj["messageId"] = f"kafka-{topic}-{partition}-{offset}"
    return receive_event(obj, now=received_ms, received_at=format_ms(received_ms), skew_tolerance=skew_tolerance)
