"""SPEC §1: parsing Segment-format events, and every way an event can be bad."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tripwire.errors import EventError, RulesError
from tripwire.events import parse_event
from tripwire.rules import parse_rules
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
        receivedAt="2026-03-01T11:00:05.000Z",
    )
    assert format_ms(parse_event(obj).ts) == "2026-03-01T11:00:04.000Z"


@pytest.mark.parametrize("gap", [0, 1, 2000, -2000])
def test_a_clock_within_the_tolerance_keeps_its_timestamp(gap: int) -> None:
    """§1: the correction applies only when |receivedAt - sentAt| > clock_skew_tolerance (2s)."""
    obj = ev(timestamp="2026-03-01T11:59:59.000Z", sentAt=T0, receivedAt=format_ms(parse_ms(T0) + gap))
    assert format_ms(parse_event(obj).ts) == "2026-03-01T11:59:59.000Z"
    assert obj["timestamp"] == "2026-03-01T11:59:59.000Z"
    assert "originalTimestamp" not in obj  # nothing rewritten, nothing added


def test_two_requests_of_a_good_clock_keep_their_order_whatever_their_network_delay() -> None:
    """Issue 13: an identify sent just before a track must stay before it, even if it took longer to arrive."""
    identify = ev(type="identify", event=..., timestamp="2026-03-01T12:00:00.000Z", sentAt="2026-03-01T12:00:00.001Z")
    track = ev(timestamp="2026-03-01T12:00:00.003Z", sentAt="2026-03-01T12:00:00.004Z")
    identify["receivedAt"] = "2026-03-01T12:00:00.090Z"  # 89 ms on the way
    track["receivedAt"] = "2026-03-01T12:00:00.010Z"  # 6 ms on the way
    assert parse_event(identify).ts < parse_event(track).ts


def test_the_tolerance_is_a_parameter_and_zero_always_corrects() -> None:
    """§1: `clock_skew_tolerance` is a setting; parse_event takes it in milliseconds."""
    fields = {"timestamp": "2026-03-01T11:00:00.000Z", "sentAt": "2026-03-01T11:00:01.000Z"}
    received = "2026-03-01T11:00:05.000Z"
    assert format_ms(parse_event(ev(**fields, receivedAt=received)).ts) == "2026-03-01T11:00:04.000Z"
    kept = parse_event(ev(**fields, receivedAt=received), skew_tolerance=5_000).ts
    assert format_ms(kept) == "2026-03-01T11:00:00.000Z"
    near = {"timestamp": "2026-03-01T11:00:00.000Z", "sentAt": "2026-03-01T11:00:00.500Z"}
    corrected = parse_event(ev(**near, receivedAt="2026-03-01T11:00:00.501Z"), skew_tolerance=0).ts
    assert format_ms(corrected) == "2026-03-01T11:00:00.001Z"


def test_only_an_original_timestamp_within_the_tolerance_becomes_the_timestamp() -> None:
    """docs/server.md: with no correction, an event without `timestamp` takes its originalTimestamp."""
    obj = ev(timestamp=..., originalTimestamp="2026-03-01T11:59:59.000Z", sentAt=T0, receivedAt=T0)
    assert format_ms(parse_event(obj).ts) == "2026-03-01T11:59:59.000Z"
    assert obj["timestamp"] == "2026-03-01T11:59:59.000Z"


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"timestamp": "0001-01-01T00:00:00.000Z"}, "timestamp", "years 1970 to 9999"),
        ({"timestamp": "1969-12-31T23:59:59.999Z"}, "timestamp", "years 1970 to 9999"),
        ({"timestamp": "9999-12-31T23:59:59.999-01:00"}, "timestamp", "years 1970 to 9999"),
        ({"timestamp": "10000-01-01T00:00:00Z"}, "timestamp", "not an ISO-8601"),
        ({"sentAt": "0001-01-01T00:00:00Z", "receivedAt": T0}, "sentAt", "years 1970 to 9999"),
        # In range each, out of range once corrected: this used to be a 500 (OverflowError).
        (
            {"timestamp": "1970-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z", "receivedAt": T0},
            "timestamp",
            "outside the years 1970 to 9999",
        ),
        (
            {"timestamp": "9999-12-31T00:00:00Z", "sentAt": "1970-01-01T00:00:00Z", "receivedAt": T0},
            "timestamp",
            "outside the years 1970 to 9999",
        ),
    ],
)
def test_times_outside_1970_to_9999_are_bad_before_and_after_the_correction(
    fields: dict[str, Any], field: str, fragment: str
) -> None:
    """docs/server.md, Limits and bad input: event times are held to 1970..9999."""
    with pytest.raises(EventError) as caught:
        parse_event(ev(**fields))
    assert caught.value.field == field
    assert fragment in caught.value.message


def test_the_edges_of_the_time_range_are_good() -> None:
    assert parse_event(ev(timestamp="1970-01-01T00:00:00.000Z")).ts == 0
    assert format_ms(parse_event(ev(timestamp="9999-12-31T23:59:59.999Z")).ts) == "9999-12-31T23:59:59.999Z"


def test_a_bad_value_is_quoted_short_in_the_message_however_deep_or_long() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    for field, bad in (("userId", deep), ("type", "y" * 100_000), ("timestamp", "y" * 100_000)):
        with pytest.raises(EventError) as caught:
            parse_event(ev(**{field: bad}))
        assert caught.value.field == field
        assert len(caught.value.message) < 200


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
        (ev(type=[]), "type", "not one of"),
        (ev(type={"a": 1}), "type", "not one of"),
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


RULES = """\
settings:
{settings}
triggers:
  t: {{when: a}}
"""


def test_the_time_settings_default_to_2s_of_skew_tolerance_and_60s_of_restart_grace() -> None:
    """SPEC §1 and docs/rules.md: clock_skew_tolerance 2s, restart_grace 60s, in milliseconds."""
    settings = parse_rules(RULES.format(settings="  allowed_lateness: 5s")).settings
    assert (settings.clock_skew_tolerance, settings.restart_grace) == (2_000, 60_000)
    given_ = parse_rules(RULES.format(settings="  clock_skew_tolerance: 500ms\n  restart_grace: 0s")).settings
    assert (given_.clock_skew_tolerance, given_.restart_grace) == (500, 0)


@pytest.mark.parametrize("name", ["clock_skew_tolerance", "restart_grace"])
@pytest.mark.parametrize("value", ["2 seconds", "-1s", "true", "[1s]"])
def test_a_bad_time_setting_is_a_located_error(name: str, value: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(RULES.format(settings=f"  {name}: {value}"), "rules.yaml")
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == ("rules.yaml", 2, f"settings.{name}")
    assert "not a duration" in problem.message


def test_receive_event_stamps_what_the_receiver_owns_and_refuses_a_far_future_time() -> None:
    """The arrival rules every receiver applies (HTTP now, a topic in the cluster)."""
    from tripwire.arrival import MAX_FUTURE_MS, receive_event

    now = 1_772_323_200_000
    raw = {"type": "track", "event": "x", "userId": "u", "timestamp": format_ms(now), "writeKey": "k"}
    event = receive_event(raw, now=now, received_at=format_ms(now), skew_tolerance=2_000)
    assert "writeKey" not in event.raw and event.raw["receivedAt"] == format_ms(now) and event.message_id
    ahead = {"type": "track", "event": "x", "userId": "u", "timestamp": format_ms(now + MAX_FUTURE_MS + 1)}
    with pytest.raises(EventError) as caught:
        receive_event(ahead, now=now, received_at=format_ms(now), skew_tolerance=2_000)
    assert caught.value.field == "timestamp" and "in the future" in caught.value.message


def test_a_batch_member_takes_the_batch_fields_under_its_own() -> None:
    from tripwire.arrival import batch_member

    item = {"event": "x", "context": {"ip": "own"}}
    merged = batch_member(item, "2026-03-01T00:00:00Z", {"ip": "batch", "locale": "fr"})
    assert merged["context"] == {"ip": "own", "locale": "fr"} and merged["sentAt"] == "2026-03-01T00:00:00Z"
    assert item == {"event": "x", "context": {"ip": "own"}}  # left as it was
    assert batch_member({"context": 5}, None, {"ip": "b"})["context"] == 5  # parse_event names it
