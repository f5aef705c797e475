"""Segment-format events: validation, clock-skew correction and the `Event` value."""

from __future__ import annotations

import hashlib
import reprlib
from typing import Any, Final

import msgspec

from tripwire.errors import EventError
from tripwire.rules.model import EVENT_TYPES
from tripwire.timestamps import format_ms, parse_ms

ACTIVITY: Final = frozenset({"track", "page", "screen"})
_OBJECT_FIELDS: Final = ("properties", "traits", "context")
_ID_FIELDS: Final = ("userId", "anonymousId", "previousId", "messageId")
_encode_sorted = msgspec.json.Encoder(order="sorted").encode
# Event times tripwire can hold: 1970-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z.
MIN_MS: Final = 0
MAX_MS: Final = 253_402_300_799_999
DEFAULT_SKEW_TOLERANCE: Final = 2_000


def _bounded_repr() -> reprlib.Repr:
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother, shown.maxlist, shown.maxdict = 3, 60, 60, 4, 4
    return shown


# Values quoted in error messages: short, and never deep (a client may send anything).
_shown = _bounded_repr().repr


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
        raise EventError(field, f"expected an ISO-8601 string such as 2026-03-01T12:00:00.000Z, got {_shown(value)}")
    try:
        ms = parse_ms(value)
    except ValueError:
        raise EventError(
            field, f"{_shown(value)} is not an ISO-8601 timestamp such as 2026-03-01T12:00:00.000Z"
        ) from None
    if not MIN_MS <= ms <= MAX_MS:
        raise EventError(field, f"{_shown(value)} is outside the years 1970 to 9999")
    return ms


def _event_time(obj: dict[str, Any], tolerance: int) -> int:
    """The event time, corrected for client clock skew when sentAt and receivedAt are present."""
    stamp = obj.get("timestamp")
    original = obj.get("originalTimestamp")
    if obj.get("sentAt") is not None and obj.get("receivedAt") is not None and (original or stamp) is not None:
        sent = _time(obj, "sentAt")
        received = _time(obj, "receivedAt")
        # Within the tolerance the client's clock is taken as right, so its events keep
        # their order whatever each request's network delay (SPEC §1).
        if abs(received - sent) > tolerance:
            client_field = "originalTimestamp" if original is not None else "timestamp"
            corrected = received - (sent - _time(obj, client_field))
            if not MIN_MS <= corrected <= MAX_MS:
                raise EventError(
                    "timestamp",
                    f"corrected for the client's clock (receivedAt - (sentAt - {client_field})) it falls "
                    f"outside the years 1970 to 9999; check sentAt ({_shown(obj['sentAt'])}) and {client_field}",
                )
            obj["originalTimestamp"] = obj[client_field]
            obj["timestamp"] = format_ms(corrected)
            return corrected
    if stamp is not None:
        return _time(obj, "timestamp")
    for field in ("originalTimestamp", "receivedAt"):
        if obj.get(field) is not None:
            ms = _time(obj, field)
            obj["timestamp"] = obj[field]
            return ms
    raise EventError("timestamp", "missing; every event needs an ISO-8601 timestamp")


def _bad_ids(obj: dict[str, Any]) -> None:
    for field in _ID_FIELDS:
        value = obj.get(field)
        if value is not None and (value.__class__ is not str or not value):
            raise EventError(field, f"expected a non-empty string, got {_shown(value)}")


def _check_identity(obj: dict[str, Any], type_: str, user_id: str | None, anonymous_id: str | None) -> None:
    previous = obj.get("previousId")
    if previous is not None and (previous.__class__ is not str or not previous):
        raise EventError("previousId", f"expected a non-empty string, got {_shown(previous)}")
    if type_ == "alias" and (user_id is None or (previous is None and anonymous_id is None)):
        raise EventError("previousId", "an alias needs a userId and a previousId to link to it")


def parse_event(obj: Any, *, skew_tolerance: int = DEFAULT_SKEW_TOLERANCE) -> Event:
    """Validate a Segment-format event object; raise EventError naming the bad field.

    Applies the clock-skew correction in place (setting `timestamp` and
    `originalTimestamp`) when `|receivedAt - sentAt|` exceeds `skew_tolerance` ms, and
    gives an event without a messageId a stable one. Structural limits are the edge's
    to hold (`tripwire.limits`).
    """
    if obj.__class__ is not dict:
        raise EventError("(event)", f"an event is a JSON object, not {type(obj).__name__}")
    type_ = obj.get("type")
    name = obj.get("event")
    if type_ is None:
        if name is None:
            raise EventError("type", "missing; set type (track, page, screen, identify, alias, group) or event")
        type_ = "track"
    elif type_.__class__ is not str or type_ not in EVENT_TYPES:  # a list cannot even be looked up
        raise EventError("type", f"{_shown(type_)} is not one of track, page, screen, identify, alias, group")
    if type_ == "track":
        if name.__class__ is not str or not name:
            raise EventError("event", "a track event needs its event name as a non-empty string")
    elif name is not None and name.__class__ is not str:
        raise EventError("event", f"expected a string, got {_shown(name)}")
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
        raise EventError("name", f"expected a string, got {_shown(page_name)}")
    stamp = get("timestamp")
    if stamp.__class__ is str and get("sentAt") is None:
        try:
            ts = parse_ms(stamp)
        except ValueError:
            ts = _time(obj, "timestamp")
        if not MIN_MS <= ts <= MAX_MS:
            ts = _time(obj, "timestamp")  # raises, naming the range
    else:
        ts = _event_time(obj, skew_tolerance)
    auto_id = message_id is None
    if message_id is None:
        message_id = "auto-" + hashlib.blake2b(_encode_sorted(obj), digest_size=16).hexdigest()
        obj["messageId"] = message_id
    return Event(type_, name, user_id, anonymous_id, message_id, ts, obj, auto_id)
