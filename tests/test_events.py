"""SPEC §1: parsing Segment-format events, and every way an event can be bad."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tripwire.errors import EventError
from tripwire.events import parse_event
from tripwire.timestamps import format_ms, parse_ms

T0 = "2026-03-01T12:00:00.000Z"


def ev(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "track", "event": "x", "userId": "u1", "messageId": "m1", "timestamp": T0}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def test_type_defaults_to_track_when_event_is_set() -> None:
    """§1 type: track when absent and event is set."""
    assert parse_event(ev(type=...)).type == "track"


def test_user_key_is_user_id_else_anonymous_id() -> None:
    """§1 userId / anonymousId: the user key is userId, else anonymousId."""
    assert parse_event(ev(anonymousId="a1")).user_key == "u1"
    assert parse_event(ev(userId=..., anonymousId="a1")).user_key == "a1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00.123Z", "2026-03-01T12:00:00.123Z"),
        ("2026-03-01T12:00:00.123999Z", "2026-03-01T12:00:00.123Z"),
        ("2026-03-01T12:00:00.1239999999Z", "2026-03-01T12:00:00.123Z"),
        ("2026-03-01T13:00:00.5+01:00", "2026-03-01T12:00:00.500Z"),
        ("2026-03-01T07:00:00-05:00", "2026-03-01T12:00:00.000Z"),
        ("2026-03-01T12:00:00", "2026-03-01T12:00:00.000Z"),
    ],
)
def test_timestamps_are_cut_to_the_millisecond_and_offsets_apply(text: str, expected: str) -> None:
    """§1 timestamp: ISO-8601, kept to the millisecond (finer digits cut); no offset means UTC."""
    assert format_ms(parse_event(ev(timestamp=text)).ts) == expected


def test_skew_correction_uses_received_minus_sent_plus_client_time() -> None:
    """§1 sentAt/receivedAt: timestamp := receivedAt - (sentAt - originalTimestamp)."""
    obj = ev(
        timestamp="2026-03-01T11:00:00.000Z", sentAt="2026-03-01T11:00:10.000Z", receivedAt="2026-03-01T12:00:12.500Z"
    )
    event = parse_event(obj)
    assert format_ms(event.ts) == "2026-03-01T12:00:02.500Z"
    assert obj["originalTimestamp"] == "2026-03-01T11:00:00.000Z"
    assert obj["timestamp"] == "2026-03-01T12:00:02.500Z"


def test_correcting_twice_changes_nothing() -> None:
    """§1: correcting an already corrected event gives the same time."""
    obj = ev(
        timestamp="2026-03-01T11:00:00.0009Z",
        sentAt="2026-03-01T11:00:10.0001Z",
        receivedAt="2026-03-01T12:00:12.5007Z",
    )
    first = parse_event(obj).ts
    again = parse_event(copy.deepcopy(obj)).ts
    assert first == again == parse_ms("2026-03-01T12:00:02.500Z")


def test_original_timestamp_wins_over_timestamp_as_client_time() -> None:
    """§1: originalTimestamp, when present, is the client's own time."""
    obj = ev(
        timestamp="2020-01-01T00:00:00Z",
        originalTimestamp="2026-03-01T11:00:00.000Z",
        sentAt="2026-03-01T11:00:01.000Z",
        receivedAt="2026-03-01T11:00:02.000Z",
    )
    assert format_ms(parse_event(obj).ts) == "2026-03-01T11:00:01.000Z"


def test_without_a_client_time_the_event_time_is_received_at() -> None:
    """docs/semantics.md: an event without a time takes its receivedAt."""
    assert format_ms(parse_event(ev(timestamp=..., receivedAt=T0)).ts) == T0


def test_missing_message_id_gets_a_stable_one() -> None:
    """docs/semantics.md: a stable messageId derived from the content."""
    a = parse_event(ev(messageId=...))
    b = parse_event(ev(messageId=...))
    assert a.message_id == b.message_id and a.message_id.startswith("auto-")
    assert a.auto_id


@pytest.mark.parametrize(
    ("obj", "field", "fragment"),
    [
        ([1, 2], "(event)", "JSON object"),
        (ev(type="purchase"), "type", "not one of"),
        (ev(type=..., event=...), "type", "missing"),
        (ev(event=...), "event", "event name"),
        (ev(event=5), "event", "event name"),
        (ev(userId=...), "userId", "userId or an anonymousId"),
        (ev(userId=42), "userId", "non-empty string"),
        (ev(userId=""), "userId", "non-empty string"),
        (ev(anonymousId=True), "anonymousId", "non-empty string"),
        (ev(messageId=7), "messageId", "non-empty string"),
        (ev(timestamp=...), "timestamp", "missing"),
        (ev(timestamp="yesterday"), "timestamp", "not an ISO-8601"),
        (ev(timestamp=1772366400), "timestamp", "ISO-8601 string"),
        (ev(properties=[1]), "properties", "JSON object"),
        (ev(traits="gold"), "traits", "JSON object"),
        (ev(context=3), "context", "JSON object"),
        (ev(type="alias", event=..., previousId=...), "previousId", "alias needs"),
        (ev(sentAt="bad", receivedAt=T0), "sentAt", "not an ISO-8601"),
        (ev(type="page", event=..., name=3), "name", "string"),
    ],
)
def test_bad_events_name_the_field_and_what_to_fix(obj: Any, field: str, fragment: str) -> None:
    """§5: bad input gets a clear error naming the field."""
    with pytest.raises(EventError) as caught:
        parse_event(obj)
    assert caught.value.field == field
    assert fragment in caught.value.message


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)), st.integers(0, 2))
def test_the_fast_timestamp_path_agrees_with_the_calendar(moment: datetime, repeat: int) -> None:
    """The cached fast path (by minute and second) gives what datetime gives, however often asked."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    delta = moment.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    expected = delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    for _ in range(repeat + 1):
        assert parse_ms(text) == expected
    assert format_ms(expected) == text
