"""Segment-format events: validation, clock-skew correction and the `Event` value."""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from tripwire.errors import EventError
from tripwire.rules.model import EVENT_TYPES
from tripwire.timestamps import format_ms, parse_ms

ACTIVITY: Final = frozenset({"track", "page", "screen"})
_OBJECT_FIELDS: Final = ("properties", "traits", "context")
_ID_FIELDS: Final = ("userId", "anonymousId", "previousId", "messageId")
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


class Event:
    """An accepted-or-not event, parsed once: the fields the engine needs plus the raw object."""

    __slots__ = ("anonymous_id", "auto_id", "message_id", "name", "raw", "ts", "type", "user_id")

    def __init__(
        self,
        type_: str,
        name: str | None,
        user_id: str | None,
        anonymous_id: str | None,
        message_id: str,
        ts: int,
        raw: dict[str, Any],
        auto_id: bool = False,
    ) -> None:
        self.type = type_
        self.name = name
        self.user_id = user_id
        self.anonymous_id = anonymous_id
        self.message_id = message_id
        self.ts = ts
        self.raw = raw
        self.auto_id = auto_id

    @property
    def user_key(self) -> str:
        """`userId`, else `anonymousId` (before identity links are followed)."""
        return self.user_id or self.anonymous_id  # type: ignore[return-value]  # one is always set

    def __repr__(self) -> str:
        return f"Event({self.type} {self.name!r} user={self.user_key!r} ts={self.ts} id={self.message_id!r})"


def _time(obj: dict[str, Any], field: str) -> int:
    value = obj[field]
    if not isinstance(value, str):
        raise EventError(field, f"expected an ISO-8601 string such as 2026-03-01T12:00:00.000Z, got {value!r}")
    try:
        return parse_ms(value)
    except ValueError:
        raise EventError(field, f"{value!r} is not an ISO-8601 timestamp such as 2026-03-01T12:00:00.000Z") from None


def _event_time(obj: dict[str, Any]) -> int:
    """The event time, corrected for client clock skew when sentAt and receivedAt are present."""
    stamp = obj.get("timestamp")
    original = obj.get("originalTimestamp")
    received = obj.get("receivedAt")
    if obj.get("sentAt") is not None and received is not None and (original or stamp) is not None:
        client_field = "originalTimestamp" if original is not None else "timestamp"
        client = _time(obj, client_field)
        corrected = _time(obj, "receivedAt") - (_time(obj, "sentAt") - client)
        obj["originalTimestamp"] = obj[client_field]
        obj["timestamp"] = format_ms(corrected)
        return corrected
    if stamp is not None:
        return _time(obj, "timestamp")
    for field in ("originalTimestamp", "receivedAt"):
        if obj.get(field) is not None:
            obj["timestamp"] = obj[field]
            return _time(obj, field)
    raise EventError("timestamp", "missing; every event needs an ISO-8601 timestamp")


def _bad_ids(obj: dict[str, Any]) -> None:
    for field in _ID_FIELDS:
        value = obj.get(field)
        if value is not None and (value.__class__ is not str or not value):
            raise EventError(field, f"expected a non-empty string, got {value!r}")


def _check_identity(obj: dict[str, Any], type_: str, user_id: str | None, anonymous_id: str | None) -> None:
    previous = obj.get("previousId")
    if previous is not None and (previous.__class__ is not str or not previous):
        raise EventError("previousId", f"expected a non-empty string, got {previous!r}")
    if type_ == "alias" and (user_id is None or (previous is None and anonymous_id is None)):
        raise EventError("previousId", "an alias needs a userId and a previousId to link to it")


def parse_event(obj: Any) -> Event:
    """Validate a Segment-format event object; raise EventError naming the bad field.

    Applies the clock-skew correction in place (setting `timestamp` and
    `originalTimestamp`), and gives an event without a messageId a stable one.
    """
    if obj.__class__ is not dict:
        raise EventError("(event)", f"an event is a JSON object, not {type(obj).__name__}")
    type_ = obj.get("type")
    name = obj.get("event")
    if type_ is None:
        if name is None:
            raise EventError("type", "missing; set type (track, page, screen, identify, alias, group) or event")
        type_ = "track"
    elif type_ not in EVENT_TYPES:
        raise EventError("type", f"{type_!r} is not one of track, page, screen, identify, alias, group")
    if type_ == "track":
        if name.__class__ is not str or not name:
            raise EventError("event", "a track event needs its event name as a non-empty string")
    elif name is not None and name.__class__ is not str:
        raise EventError("event", f"expected a string, got {name!r}")
    get = obj.get
    user_id = get("userId")
    anonymous_id = get("anonymousId")
    message_id: str | None = get("messageId")
    if not (
        (user_id is None or (user_id.__class__ is str and user_id))
        and (anonymous_id is None or (anonymous_id.__class__ is str and anonymous_id))
        and (message_id is None or (message_id.__class__ is str and message_id))
    ):
        _bad_ids(obj)
    if user_id is None and anonymous_id is None:
        raise EventError("userId", "missing; every event needs a userId or an anonymousId")
    if type_ == "alias" or type_ == "identify":  # noqa: PLR1714  # a set costs more on the hot path
        _check_identity(obj, type_, user_id, anonymous_id)
    for field in _OBJECT_FIELDS:
        value = get(field)
        if value is not None and value.__class__ is not dict:
            raise EventError(field, f"expected a JSON object, got {type(value).__name__}")
    page_name = get("name")
    if page_name is not None and page_name.__class__ is not str:
        raise EventError("name", f"expected a string, got {page_name!r}")
    stamp = get("timestamp")
    if stamp.__class__ is str and get("sentAt") is None:
        try:
            ts = parse_ms(stamp)
        except ValueError:
            ts = _time(obj, "timestamp")
    else:
        ts = _event_time(obj)
    auto_id = message_id is None
    if message_id is None:
        message_id = "auto-" + hashlib.blake2b(_encode_sorted(obj), digest_size=16).hexdigest()
        obj["messageId"] = message_id
    return Event(type_, name, user_id, anonymous_id, message_id, ts, obj, auto_id)
