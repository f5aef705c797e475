"""The rules semantics as a table: one case per clause of SPEC §1-§4 and per choice in
docs/semantics.md.

Each case replays `events` (in arrival order) against `rules` and expects exactly `fires`
(fire_id aside; tests/test_spec.py checks it separately). Times are written as seconds
after 2026-03-01T00:00:00Z through `at()`. Fires are always emitted in fire-time order;
`ordered=True` also pins the order of fires in the same millisecond where SPEC fixes it.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

Event = dict[str, Any]
Fire = dict[str, Any]

_BASE = datetime(2026, 3, 1, tzinfo=UTC)

# Stands for a messageId the engine derives for an event that has none: "auto-" + 32 hex.
AUTO_ID = "<auto-messageId>"

MINUTE = 60
HOUR = 3_600
DAY = 86_400
WEEK = 7 * DAY


def at(seconds: float) -> str:
    """The ISO-8601 UTC time `seconds` after 2026-03-01T00:00:00Z, to the millisecond."""
    moment = _BASE + timedelta(milliseconds=round(seconds * 1000))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Case:
    id: str
    rules: str
    events: list[Event]
    fires: list[Fire]
    until: str | None = None
    ordered: bool = False
    stats: dict[str, int] | None = None


CASES: list[Case] = []


def case(
    cid: str,
    rules: str,
    events: list[Event],
    fires: list[Fire],
    *,
    until: float | None = None,
    ordered: bool = False,
    stats: dict[str, int] | None = None,
) -> None:
    CASES.append(
        Case(
            id=cid,
            rules=textwrap.dedent(rules).strip() + "\n",
            events=events,
            fires=fires,
            until=None if until is None else at(until),
            ordered=ordered,
            stats=stats,
        )
    )


# --- events -------------------------------------------------------------------------


def _who(event: Event, user: str | None, anon: str | None) -> Event:
    if user is not None:
        event["userId"] = user
    if anon is not None:
        event["anonymousId"] = anon
    return event


def track(
    mid: str,
    name: str,
    s: float,
    user: str | None = "u1",
    *,
    anon: str | None = None,
    props: dict[str, Any] | None = None,
    **extra: Any,
) -> Event:
    event: Event = {"type": "track", "event": name, "messageId": mid, "timestamp": at(s)}
    if props is not None:
        event["properties"] = props
    event.update(extra)
    return _who(event, user, anon)


def page(
    mid: str,
    s: float,
    user: str | None = "u1",
    *,
    name: str | None = None,
    anon: str | None = None,
    **extra: Any,
) -> Event:
    event: Event = {"type": "page", "messageId": mid, "timestamp": at(s)}
    if name is not None:
        event["name"] = name
    event.update(extra)
    return _who(event, user, anon)


def screen(mid: str, s: float, user: str | None = "u1", *, name: str | None = None) -> Event:
    event: Event = {"type": "screen", "messageId": mid, "timestamp": at(s)}
    if name is not None:
        event["name"] = name
    return _who(event, user, None)


def identify(
    mid: str,
    s: float,
    user: str | None = "u1",
    *,
    anon: str | None = None,
    traits: dict[str, Any] | None = None,
) -> Event:
    event: Event = {"type": "identify", "messageId": mid, "timestamp": at(s)}
    if traits is not None:
        event["traits"] = traits
    return _who(event, user, anon)


def alias(mid: str, s: float, user: str, *, previous: str | None = None, anon: str | None = None) -> Event:
    event: Event = {"type": "alias", "messageId": mid, "timestamp": at(s)}
    if previous is not None:
        event["previousId"] = previous
    return _who(event, user, anon)


def group(mid: str, s: float, user: str = "u1") -> Event:
    return {"type": "group", "groupId": "g1", "userId": user, "messageId": mid, "timestamp": at(s)}


def fire(
    trigger: str,
    s: float,
    events: list[str],
    user: str = "u1",
    *,
    key: Any = None,
    suppressed: str | None = None,
) -> Fire:
    return {
        "trigger": trigger,
        "user_id": user,
        "key": key,
        "fire_time": at(s),
        "events": events,
        "suppressed": suppressed,
    }


# --- rules --------------------------------------------------------------------------

BUY = """
triggers:
  buy:
    when: purchase
"""


def buy(extra: str = "", settings: str = "") -> str:
    """`buy: when purchase` plus extra trigger lines (already indented by 4)."""
    return settings + "triggers:\n  buy:\n    when: purchase\n" + extra


def abandon(within: str = "10s", extra: str = "", settings: str = "") -> str:
    return (
        settings
        + "triggers:\n  abandon:\n    when: add_to_cart\n    unless: purchase\n"
        + f"    within: {within}\n"
        + extra
    )


def binge(count: int, within: str | None = None, extra: str = "") -> str:
    text = f"triggers:\n  binge:\n    when: song_played\n    count: {count}\n"
    if within is not None:
        text += f"    within: {within}\n"
    return text + extra


def inactive(period: str = "10s", extra: str = "") -> str:
    return f"triggers:\n  idle:\n    inactive: {period}\n" + extra


def guarded(*guards: str, name: str = "buy", when: str = "purchase", extra: str = "") -> str:
    body = "".join(f"      - {g}\n" for g in guards)
    return f"triggers:\n  {name}:\n    when: {when}\n{extra}    if:\n{body}"


LATENESS_1M = "settings:\n  allowed_lateness: 1m\n"
NEVER_PRO = "    if:\n      - {trait: plan, eq: pro}\n"


# ====================================================================================
# §1 Events
# ====================================================================================

case(
    "§1 an event without type but with `event` is a track",
    BUY,
    [{"event": "purchase", "userId": "u1", "messageId": "m1", "timestamp": at(1)}],
    [fire("buy", 1, ["m1"])],
)

case(
    "§1 a track event matches a `when` name by its `event` field",
    BUY,
    [track("m1", "purchase", 1), track("m2", "refund", 2)],
    [fire("buy", 1, ["m1"])],
)

case(
    "§1/semantics page and screen names do not match a `when` name; match them by type",
    """
    triggers:
      by_name:
        when: Pricing
      pricing_pages:
        when: {type: page, where: {name: Pricing}}
      screens:
        when: {type: screen}
    """,
    [page("m1", 1, name="Pricing"), screen("m2", 2, name="Pricing"), page("m3", 3, name="Home")],
    [fire("pricing_pages", 1, ["m1"]), fire("screens", 2, ["m2"])],
)

case(
    "§1/semantics identify, alias and group events are matched by `when` type",
    """
    triggers:
      ids:
        when: {type: identify}
      aliases:
        when: {type: alias}
      groups:
        when: {type: group}
    """,
    [
        identify("m1", 1, traits={"plan": "pro"}),
        alias("m2", 2, "u1", previous="a9"),
        group("m3", 3),
    ],
    [fire("ids", 1, ["m1"]), fire("aliases", 2, ["m2"]), fire("groups", 3, ["m3"])],
)

case(
    "§1 the user key is userId when both userId and anonymousId are set",
    BUY,
    [track("m1", "purchase", 1, "u1", anon="a1")],
    [fire("buy", 1, ["m1"], "u1")],
)

case(
    "§1 the user key is anonymousId when userId is absent",
    BUY,
    [track("m1", "purchase", 1, None, anon="a1")],
    [fire("buy", 1, ["m1"], "a1")],
)

case(
    "§1/semantics a track carrying both ids does not link them (identify and alias link)",
    BUY,
    [track("m1", "purchase", 1, "u1", anon="a1"), track("m2", "purchase", 2, None, anon="a1")],
    [fire("buy", 1, ["m1"], "u1"), fire("buy", 2, ["m2"], "a1")],
)

case(
    "§1 a second event with an accepted messageId is a duplicate and is dropped",
    BUY,
    [track("m1", "purchase", 1), track("m1", "purchase", 1)],
    [fire("buy", 1, ["m1"])],
    stats={"accepted": 1, "duplicate": 1},
)

case(
    "§1 a duplicate is dropped by messageId even when its content differs",
    binge(2),
    [
        track("m1", "song_played", 1),
        track("m1", "song_played", 2, props={"other": True}),
        track("m2", "song_played", 3),
    ],
    [fire("binge", 3, ["m1", "m2"])],
    stats={"accepted": 2, "duplicate": 1},
)

case(
    "§3.4 settings: a replay remembers every messageId (a repeat 30 days later is a duplicate)",
    BUY,
    [track("m1", "purchase", 0), track("m1", "purchase", 30 * DAY)],
    [fire("buy", 0, ["m1"])],
    stats={"duplicate": 1},
)

case(
    "§1 a timestamp with a positive offset is converted to UTC",
    BUY,
    [
        {
            "type": "track",
            "event": "purchase",
            "userId": "u1",
            "messageId": "m1",
            "timestamp": "2026-03-01T02:00:09+02:00",
        }
    ],
    [fire("buy", 9, ["m1"])],
)

case(
    "§1 a timestamp with a negative offset is converted to UTC",
    BUY,
    [
        {
            "type": "track",
            "event": "purchase",
            "userId": "u1",
            "messageId": "m1",
            "timestamp": "2026-02-28T19:30:09.250-04:30",
        }
    ],
    [fire("buy", 9.25, ["m1"])],
)

case(
    "§1 a timestamp without an offset is UTC",
    BUY,
    [
        {
            "type": "track",
            "event": "purchase",
            "userId": "u1",
            "messageId": "m1",
            "timestamp": "2026-03-01T00:00:09.500",
        }
    ],
    [fire("buy", 9.5, ["m1"])],
)

case(
    "§1 digits finer than the millisecond are cut, not rounded",
    BUY,
    [
        {
            "type": "track",
            "event": "purchase",
            "userId": "u1",
            "messageId": "m1",
            "timestamp": "2026-03-01T00:00:09.123999Z",
        },
        {
            "type": "track",
            "event": "purchase",
            "userId": "u2",
            "messageId": "m2",
            "timestamp": "2026-03-01T00:00:09.999999999Z",
        },
    ],
    [fire("buy", 9.123, ["m1"], "u1"), fire("buy", 9.999, ["m2"], "u2")],
)

case(
    "§1 digits finer than the millisecond are cut before an offset is applied",
    BUY,
    [
        {
            "type": "track",
            "event": "purchase",
            "userId": "u1",
            "messageId": "m1",
            "timestamp": "2026-03-01T02:00:09.1239+02:00",
        }
    ],
    [fire("buy", 9.123, ["m1"])],
)

case(
    "§1 skew correction: timestamp := receivedAt - (sentAt - originalTimestamp)",
    BUY,
    [
        {
            "type": "track",
            "event": "purchase",
            "userId": "u1",
            "messageId": "m1",
            "originalTimestamp": at(0),
            "sentAt": at(5),
            "receivedAt": at(60),
        }
    ],
    [fire("buy", 55, ["m1"])],
)

case(
    "§1 skew correction takes the incoming timestamp as client time without originalTimestamp",
    BUY,
    [
        {
            "type": "track",
            "event": "purchase",
            "userId": "u1",
            "messageId": "m1",
            "timestamp": at(0),
            "sentAt": at(5),
            "receivedAt": at(60),
        }
    ],
    [fire("buy", 55, ["m1"])],
)

case(
    "§1 correcting twice changes nothing (corrected timestamp with originalTimestamp kept)",
    BUY,
    [
        {
            "type": "track",
            "event": "purchase",
            "userId": "u1",
            "messageId": "m1",
            "timestamp": at(55),
            "originalTimestamp": at(0),
            "sentAt": at(5),
            "receivedAt": at(60),
        }
    ],
    [fire("buy", 55, ["m1"])],
)

case(
    "§1 skew correction cuts each timestamp to the millisecond first",
    BUY,
    [
        {
            "type": "track",
            "event": "purchase",
            "userId": "u1",
            "messageId": "m1",
            "originalTimestamp": "2026-03-01T00:00:00.0009Z",
            "sentAt": "2026-03-01T00:00:05.000Z",
            "receivedAt": "2026-03-01T00:01:00.0005Z",
        }
    ],
    [fire("buy", 55, ["m1"])],
)

case(
    "§1 no skew correction unless both sentAt and receivedAt are present",
    BUY,
    [
        track("m1", "purchase", 10, "u1", sentAt=at(5)),
        track("m2", "purchase", 10, "u2", receivedAt=at(60)),
    ],
    [fire("buy", 10, ["m1"], "u1"), fire("buy", 10, ["m2"], "u2")],
)

# --- identity -----------------------------------------------------------------------

case(
    "§1 an identify with anonymousId and userId links: later anonymous events count for the user",
    BUY,
    [identify("m1", 1, "u1", anon="a1"), track("m2", "purchase", 2, None, anon="a1")],
    [fire("buy", 2, ["m2"], "u1")],
)

case(
    "§1/semantics an alias links its previousId to the userId",
    BUY,
    [alias("m1", 1, "u1", previous="a1"), track("m2", "purchase", 2, None, anon="a1")],
    [fire("buy", 2, ["m2"], "u1")],
)

case(
    "semantics an alias with userId and anonymousId links them",
    BUY,
    [alias("m1", 1, "u1", anon="a1"), track("m2", "purchase", 2, None, anon="a1")],
    [fire("buy", 2, ["m2"], "u1")],
)

case(
    "semantics events before the link count for the anonymous id, events after it for the user",
    BUY,
    [
        track("m1", "purchase", 1, None, anon="a1"),
        identify("m2", 2, "u1", anon="a1"),
        track("m3", "purchase", 3, None, anon="a1"),
    ],
    [fire("buy", 1, ["m1"], "a1"), fire("buy", 3, ["m3"], "u1")],
)

case(
    "semantics the link takes effect at its place in the reference order, not its arrival",
    BUY,
    [
        identify("m1", 2, "u1", anon="a1"),
        track("m2", "purchase", 1, None, anon="a1"),
        track("m3", "purchase", 3, None, anon="a1"),
    ],
    [fire("buy", 1, ["m2"], "a1"), fire("buy", 3, ["m3"], "u1")],
)

case(
    "semantics merge: count lists join in reference order and fire at the linking event's time",
    binge(2, "1h"),
    [
        track("m1", "song_played", 1, None, anon="a1"),
        track("m2", "song_played", 2, "u1"),
        identify("m3", 3, "u1", anon="a1"),
    ],
    [fire("binge", 3, ["m1", "m2"], "u1")],
)

case(
    "semantics merge: joined count events at or before t - within are dropped",
    binge(2, "10s"),
    [
        track("m1", "song_played", 0, None, anon="a1"),
        track("m2", "song_played", 5, "u1"),
        identify("m3", 10, "u1", anon="a1"),
        track("m4", "song_played", 12, "u1"),
    ],
    [fire("binge", 12, ["m2", "m4"], "u1")],
)

case(
    "semantics merge: a joined count short of count waits; later anonymous events add to it",
    binge(3),
    [
        track("m1", "song_played", 1, None, anon="a1"),
        identify("m2", 2, "u1", anon="a1"),
        track("m3", "song_played", 3, "u1"),
        track("m4", "song_played", 4, None, anon="a1"),
    ],
    [fire("binge", 4, ["m1", "m3", "m4"], "u1")],
)

case(
    "semantics merge: two open windows without restart keep the one opened first (anonymous)",
    abandon("10s"),
    [
        track("m1", "add_to_cart", 1, None, anon="a1"),
        track("m2", "add_to_cart", 3, "u1"),
        identify("m3", 5, "u1", anon="a1"),
    ],
    [fire("abandon", 11, ["m1"], "u1")],
    until=20,
)

case(
    "semantics merge: two open windows without restart keep the one opened first (user)",
    abandon("10s"),
    [
        track("m1", "add_to_cart", 1, "u1"),
        track("m2", "add_to_cart", 3, None, anon="a1"),
        identify("m3", 5, "u1", anon="a1"),
    ],
    [fire("abandon", 11, ["m1"], "u1")],
    until=20,
)

case(
    "semantics merge: two open windows with restart take the later deadline and both when events",
    abandon("10s", "    restart: true\n"),
    [
        track("m1", "add_to_cart", 1, None, anon="a1"),
        track("m2", "add_to_cart", 3, "u1"),
        identify("m3", 5, "u1", anon="a1"),
    ],
    [fire("abandon", 13, ["m1", "m2"], "u1")],
    until=20,
)

case(
    "semantics merge: with restart the later deadline wins whichever side holds it",
    abandon("10s", "    restart: true\n"),
    [
        track("m1", "add_to_cart", 1, "u1"),
        track("m2", "add_to_cart", 3, None, anon="a1"),
        identify("m3", 5, "u1", anon="a1"),
    ],
    [fire("abandon", 13, ["m1", "m2"], "u1")],
    until=20,
)

case(
    "semantics merge: a window open only under the anonymous id moves to the user",
    abandon("10s"),
    [track("m1", "add_to_cart", 1, None, anon="a1"), identify("m2", 2, "u1", anon="a1")],
    [fire("abandon", 11, ["m1"], "u1")],
    until=20,
)

case(
    "semantics merge: the user's unless closes a window moved over from the anonymous id",
    abandon("10s"),
    [
        track("m1", "add_to_cart", 1, None, anon="a1"),
        identify("m2", 2, "u1", anon="a1"),
        track("m3", "purchase", 3, "u1"),
    ],
    [],
    until=20,
)

case(
    "semantics/§2 a link at exactly a window's deadline is applied first; the user gets the fire",
    abandon("10s"),
    [track("m1", "add_to_cart", 0, None, anon="a1"), identify("m2", 10, "u1", anon="a1")],
    [fire("abandon", 10, ["m1"], "u1")],
)

case(
    "semantics merge: inactivity keeps the later deadline with its last activity (user's)",
    inactive("10s"),
    [
        page("m1", 1, None, anon="a1"),
        track("m2", "x", 4, "u1"),
        identify("m3", 5, "u1", anon="a1"),
    ],
    [fire("idle", 14, ["m2"], "u1")],
    until=30,
)

case(
    "semantics merge: inactivity keeps the later deadline with its last activity (anonymous)",
    inactive("10s"),
    [
        track("m1", "x", 1, "u1"),
        page("m2", 4, None, anon="a1"),
        identify("m3", 5, "u1", anon="a1"),
    ],
    [fire("idle", 14, ["m2"], "u1")],
    until=30,
)

case(
    "semantics merge: cooldown keeps the later last fire of the two",
    buy("    cooldown: 100s\n"),
    [
        track("m1", "purchase", 0, "u1"),
        track("m2", "purchase", 50, None, anon="a1"),
        identify("m3", 60, "u1", anon="a1"),
        track("m4", "purchase", 120, None, anon="a1"),
        track("m5", "purchase", 150, "u1"),
    ],
    [
        fire("buy", 0, ["m1"], "u1"),
        fire("buy", 50, ["m2"], "a1"),
        fire("buy", 120, ["m4"], "u1", suppressed="cooldown"),
        fire("buy", 150, ["m5"], "u1"),
    ],
)

case(
    "semantics merge: guard histories (did / did_not) of both ids are joined",
    """
    triggers:
      buy_did:
        when: purchase
        if:
          - {did: view, within: 1m}
      buy_did_not:
        when: purchase
        if:
          - {did_not: view, within: 1m}
    """,
    [
        track("m1", "view", 1, None, anon="a1"),
        identify("m2", 2, "u1", anon="a1"),
        track("m3", "purchase", 3, "u1"),
    ],
    [
        fire("buy_did", 3, ["m3"], "u1"),
        fire("buy_did_not", 3, ["m3"], "u1", suppressed="guard"),
    ],
)

case(
    "semantics merge: traits are anonymous ones, overwritten by the user's, then the link's",
    """
    triggers:
      plan_pro:
        when: purchase
        if:
          - {trait: plan, eq: pro}
      color_green:
        when: purchase
        if:
          - {trait: color, eq: green}
      size_s:
        when: purchase
        if:
          - {trait: size, eq: s}
    """,
    [
        identify("m1", 1, None, anon="a1", traits={"plan": "free", "color": "red", "size": "s"}),
        identify("m2", 2, "u1", traits={"plan": "pro", "color": "blue"}),
        identify("m3", 3, "u1", anon="a1", traits={"color": "green"}),
        track("m4", "purchase", 4, "u1"),
    ],
    [fire("plan_pro", 4, ["m4"]), fire("color_green", 4, ["m4"]), fire("size_s", 4, ["m4"])],
)

case(
    "semantics an id already linked and identified with another userId is re-pointed",
    BUY,
    [
        identify("m1", 1, "u1", anon="a1"),
        identify("m2", 2, "u2", anon="a1"),
        track("m3", "purchase", 3, None, anon="a1"),
    ],
    [fire("buy", 3, ["m3"], "u2")],
)

case(
    "semantics an id is never linked to itself",
    BUY,
    [identify("m1", 1, "u1", anon="u1"), track("m2", "purchase", 2, "u1")],
    [fire("buy", 2, ["m2"], "u1")],
)

case(
    "semantics a link that would close a loop is ignored",
    BUY,
    [
        alias("m1", 1, "b", previous="a"),
        alias("m2", 2, "a", previous="b"),
        track("m3", "purchase", 3, None, anon="a"),
        track("m4", "purchase", 4, None, anon="b"),
    ],
    [fire("buy", 3, ["m3"], "b"), fire("buy", 4, ["m4"], "b")],
)

case(
    "semantics merge: an inactivity deadline open only under the anonymous id moves to the user",
    inactive("10s"),
    [page("m1", 0, None, anon="a1"), identify("m2", 2, "u1", anon="a1")],
    [fire("idle", 10, ["m1"], "u1")],
    until=20,
)

case(
    "§1/semantics an alias merges the state gathered under its previousId",
    binge(2),
    [
        track("m1", "song_played", 1, None, anon="a1"),
        alias("m2", 2, "u1", previous="a1"),
        track("m3", "song_played", 3, "u1"),
    ],
    [fire("binge", 3, ["m1", "m3"], "u1")],
)

case(
    "semantics merge: a fire at the link is subject to cooldown like any fire",
    binge(2, extra="    cooldown: 1h\n"),
    [
        track("m1", "song_played", 0, "u1"),
        track("m2", "song_played", 1, "u1"),
        track("m3", "song_played", 2, "u1"),
        track("m4", "song_played", 3, None, anon="a1"),
        identify("m5", 4, "u1", anon="a1"),
    ],
    [
        fire("binge", 1, ["m1", "m2"], "u1"),
        fire("binge", 4, ["m3", "m4"], "u1", suppressed="cooldown"),
    ],
)

case(
    "semantics merge: a fire at the link is subject to guards like any fire",
    binge(2, extra=NEVER_PRO),
    [
        track("m1", "song_played", 1, None, anon="a1"),
        track("m2", "song_played", 2, "u1"),
        identify("m3", 3, "u1", anon="a1"),
    ],
    [fire("binge", 3, ["m1", "m2"], "u1", suppressed="guard")],
)

case(
    "semantics merge: keyed windows merge per key",
    abandon("10s", "    key: properties.cart\n"),
    [
        track("m1", "add_to_cart", 1, None, anon="a1", props={"cart": "c1"}),
        track("m2", "add_to_cart", 2, "u1", props={"cart": "c1"}),
        track("m3", "add_to_cart", 3, "u1", props={"cart": "c2"}),
        identify("m4", 4, "u1", anon="a1"),
    ],
    [fire("abandon", 11, ["m1"], "u1", key="c1"), fire("abandon", 13, ["m3"], "u1", key="c2")],
    until=20,
)

case(
    "semantics re-pointing merges nothing more: the first user's state stays with it",
    binge(2),
    [
        track("m1", "song_played", 0, None, anon="a1"),
        identify("m2", 1, "u1", anon="a1"),
        identify("m3", 2, "u2", anon="a1"),
        track("m4", "song_played", 3, None, anon="a1"),
        track("m5", "song_played", 4, "u1"),
    ],
    [fire("binge", 4, ["m1", "m5"], "u1")],
)

case(
    "semantics links chain: an id linked to a user who is later linked counts for the last user",
    BUY,
    [
        identify("m1", 1, "b", anon="a"),
        identify("m2", 2, "c", anon="b"),
        track("m3", "purchase", 3, None, anon="a"),
    ],
    [fire("buy", 3, ["m3"], "c")],
)

case(
    "semantics/§2 a link and an anonymous event in one ms: the event arriving first counts for the anonymous id",
    BUY,
    [track("m1", "purchase", 5, None, anon="a1"), identify("m2", 5, "u1", anon="a1")],
    [fire("buy", 5, ["m1"], "a1")],
)

case(
    "semantics/§2 a link and an anonymous event in one ms: the event arriving after the link counts for the user",
    BUY,
    [identify("m1", 5, "u1", anon="a1"), track("m2", "purchase", 5, None, anon="a1")],
    [fire("buy", 5, ["m2"], "u1")],
)

# --- traits -------------------------------------------------------------------------

case(
    "§1 identify traits merge into the user's traits, later values winning",
    """
    triggers:
      plan_pro:
        when: purchase
        if:
          - {trait: plan, eq: pro}
      region_eu:
        when: purchase
        if:
          - {trait: region, eq: eu}
    """,
    [
        identify("m1", 1, traits={"plan": "free", "region": "eu"}),
        identify("m2", 2, traits={"plan": "pro"}),
        track("m3", "purchase", 3),
    ],
    [fire("plan_pro", 3, ["m3"]), fire("region_eu", 3, ["m3"])],
)

case(
    "semantics traits merge one level deep: a nested object is replaced whole",
    """
    triggers:
      city:
        when: purchase
        if:
          - {trait: address.city, eq: Lyon}
      zip:
        when: purchase
        if:
          - {trait: address.zip, exists: true}
    """,
    [
        identify("m1", 1, traits={"address": {"city": "Paris", "zip": "75001"}}),
        identify("m2", 2, traits={"address": {"city": "Lyon"}}),
        track("m3", "purchase", 3),
    ],
    [fire("city", 3, ["m3"]), fire("zip", 3, ["m3"], suppressed="guard")],
)

case(
    "semantics traits: the later identify in reference order wins, not the later arrival",
    guarded("{trait: plan, eq: pro}"),
    [
        identify("m1", 2, traits={"plan": "pro"}),
        identify("m2", 1, traits={"plan": "free"}),
        track("m3", "purchase", 3),
    ],
    [fire("buy", 3, ["m3"])],
)

# --- activity -----------------------------------------------------------------------

case(
    "§1 track, page and screen events are activity",
    inactive("10s"),
    [page("m1", 0, "u1"), screen("m2", 0, "u2"), track("m3", "x", 0, "u3")],
    [fire("idle", 10, ["m1"], "u1"), fire("idle", 10, ["m2"], "u2"), fire("idle", 10, ["m3"], "u3")],
    until=20,
)

case(
    "§1 identify, alias and group events are not activity",
    inactive("10s"),
    [identify("m1", 0, "u1"), group("m2", 0, "u2"), alias("m3", 0, "u3", previous="p3")],
    [],
    until=100,
)

case(
    "§1 non-activity events do not move the inactivity deadline",
    inactive("10s"),
    [
        track("m1", "x", 0),
        identify("m2", 5, traits={"plan": "pro"}),
        group("m3", 6),
        alias("m4", 7, "u1", previous="p1"),
    ],
    [fire("idle", 10, ["m1"])],
    until=20,
)

WEB = {"context": {"source": "web"}}

case(
    "§3.4/semantics `of` looks at activity events only, even when its where matches an identify",
    inactive("10s", "    of: {where: {context.source: web}}\n"),
    [identify("m1", 0) | WEB, track("m2", "x", 1) | WEB, identify("m3", 5) | WEB],
    [fire("idle", 11, ["m2"])],
    until=30,
)

# ====================================================================================
# §2 Time
# ====================================================================================

case(
    "§2 an event below the watermark is late and is not applied to rules",
    BUY,
    [track("m1", "other", 100, "u2"), track("m2", "purchase", 94.999, "u1")],
    [],
    stats={"accepted": 1, "late": 1},
)

case(
    "§2 an event exactly at the watermark is accepted (late means timestamp < watermark)",
    BUY,
    [track("m1", "other", 100, "u2"), track("m2", "purchase", 95, "u1")],
    [fire("buy", 95, ["m2"], "u1")],
    stats={"accepted": 2, "late": 0},
)

case(
    "§2 the watermark is the largest accepted time minus allowed_lateness (setting)",
    buy(settings=LATENESS_1M),
    [
        track("m1", "other", 100, "u2"),
        track("m2", "purchase", 40, "u1"),
        track("m3", "purchase", 39.999, "u1"),
    ],
    [fire("buy", 40, ["m2"], "u1")],
    stats={"accepted": 2, "late": 1},
)

case(
    "§2 one watermark serves all users: another user's event makes an event late",
    BUY,
    [track("m1", "purchase", 10, "u1"), track("m2", "other", 20, "u2"), track("m3", "purchase", 12, "u1")],
    [fire("buy", 10, ["m1"], "u1")],
    stats={"late": 1},
)

case(
    "§2 a late identify does not change the user's traits",
    """
    triggers:
      plan_free:
        when: purchase
        if:
          - {trait: plan, eq: free}
      plan_pro:
        when: purchase
        if:
          - {trait: plan, eq: pro}
    """,
    [
        identify("m1", 0, traits={"plan": "free"}),
        track("m2", "other", 100, "u2"),
        identify("m3", 90, traits={"plan": "pro"}),
        track("m4", "purchase", 100),
    ],
    [fire("plan_free", 100, ["m4"]), fire("plan_pro", 100, ["m4"], suppressed="guard")],
    stats={"late": 1},
)

case(
    "§2 late activity does not count for a did guard",
    guarded("{did: view, within: 1h}"),
    [track("m1", "other", 100, "u2"), track("m2", "view", 90), track("m3", "purchase", 100)],
    [fire("buy", 100, ["m3"], suppressed="guard")],
    stats={"late": 1},
)

case(
    "§2 late activity does not move the inactivity deadline",
    inactive("10s"),
    [page("m1", 0, "u1"), page("m2", 20, "u2"), page("m3", 12, "u1")],
    [fire("idle", 10, ["m1"], "u1")],
    until=25,
    stats={"late": 1},
)

case(
    "§2/§3.3 a user seen only in late events is never seen: no inactivity fire",
    inactive("10s"),
    [track("m1", "x", 100, "u2"), track("m2", "x", 50, "u1")],
    [fire("idle", 110, ["m1"], "u2")],
    until=200,
    stats={"late": 1},
)

case(
    "§2 lateness is decided on the corrected timestamp",
    BUY,
    [
        track("m1", "other", 100, "u2"),
        track("m2", "purchase", 100, "u1", sentAt=at(60), receivedAt=at(10)),
    ],
    [],
    stats={"late": 1},
)

case(
    "§2 the watermark moves with the corrected timestamp",
    BUY,
    [
        track("m1", "other", 0, "u2", sentAt=at(0), receivedAt=at(100)),
        track("m2", "purchase", 94.999, "u1"),
        track("m3", "purchase", 95, "u1"),
    ],
    [fire("buy", 95, ["m3"], "u1")],
    stats={"late": 1},
)

case(
    "§2 a late event is not remembered for deduplication",
    BUY,
    [
        track("m0", "other", 100, "u2"),
        track("m1", "purchase", 50, "u1"),
        track("m1", "purchase", 100, "u1"),
    ],
    [fire("buy", 100, ["m1"], "u1")],
    stats={"late": 1, "duplicate": 0, "accepted": 2},
)

case(
    "§2 a duplicate does not move the watermark",
    BUY,
    [track("m1", "purchase", 0), track("m1", "purchase", 100), track("m2", "purchase", 10)],
    [fire("buy", 0, ["m1"]), fire("buy", 10, ["m2"])],
    stats={"duplicate": 1, "late": 0},
)

case(
    "§2 acceptance is decided in arrival order: a repeat of an accepted id is a duplicate, not late",
    BUY,
    [track("m1", "purchase", 0), track("m2", "other", 100, "u2"), track("m1", "purchase", 0)],
    [fire("buy", 0, ["m1"])],
    stats={"duplicate": 1, "late": 0, "accepted": 2},
)

case(
    "§2 reference order: count events arriving out of order within lateness fire as in order",
    binge(3, "10s").replace("triggers:", LATENESS_1M + "triggers:", 1),
    [
        track("m3", "song_played", 11),
        track("m2", "song_played", 5),
        track("m1", "song_played", 0),
        track("m4", "song_played", 12),
    ],
    [fire("binge", 12, ["m2", "m3", "m4"])],
)

case(
    "§2 reference order: the same count events in order give the same fire",
    binge(3, "10s").replace("triggers:", LATENESS_1M + "triggers:", 1),
    [
        track("m1", "song_played", 0),
        track("m2", "song_played", 5),
        track("m3", "song_played", 11),
        track("m4", "song_played", 12),
    ],
    [fire("binge", 12, ["m2", "m3", "m4"])],
)

case(
    "§2 reference order: an unless later in time but arriving first still closes the window",
    abandon("10s"),
    [track("m2", "purchase", 3), track("m1", "add_to_cart", 0)],
    [],
    until=20,
)

case(
    "§2 reference order: an unless earlier in time but arriving later does not close the window",
    abandon("10s"),
    [track("m1", "add_to_cart", 5), track("m2", "purchase", 3)],
    [fire("abandon", 15, ["m1"])],
    until=20,
)

case(
    "§2/§3.2 ties in one millisecond go by arrival: when then unless closes the window",
    abandon("10s"),
    [track("m1", "add_to_cart", 0), track("m2", "purchase", 0)],
    [],
    until=20,
)

case(
    "§2/§3.2 ties in one millisecond go by arrival: unless then when leaves the window open",
    abandon("10s"),
    [track("m1", "purchase", 0), track("m2", "add_to_cart", 0)],
    [fire("abandon", 10, ["m2"])],
    until=20,
)

case(
    "§2 ties in one millisecond go by arrival: the fire lists count events in arrival order",
    binge(2),
    [track("m2", "song_played", 0), track("m1", "song_played", 0)],
    [fire("binge", 0, ["m2", "m1"])],
)

case(
    "§2 a timer due at d fires after events at d: activity at the deadline postpones inactivity",
    inactive("10s"),
    [track("m1", "x", 0), track("m2", "x", 10)],
    [fire("idle", 20, ["m2"])],
    until=25,
)

case(
    "§2 a timer due at d fires before events after d: an unless 1ms late does not close",
    abandon("10s"),
    [track("m1", "add_to_cart", 0), track("m2", "purchase", 10.001)],
    [fire("abandon", 10, ["m1"])],
)

case(
    "§2 an event's fire and a timer of one user in the same ms: the event is applied first",
    """
    triggers:
      buy:
        when: purchase
      abandon:
        when: add_to_cart
        unless: refund
        within: 10s
    """,
    [track("m1", "add_to_cart", 0), track("m2", "purchase", 10)],
    [fire("buy", 10, ["m2"]), fire("abandon", 10, ["m1"])],
    ordered=True,
)

case(
    "§2 timers of one user due in the same ms fire in the order they were set (triggers)",
    """
    triggers:
      zeta:
        when: x
        unless: never
        within: 10s
      alpha:
        when: y
        unless: never
        within: 5s
    """,
    [track("m1", "x", 0), track("m2", "y", 5)],
    [fire("zeta", 10, ["m1"]), fire("alpha", 10, ["m2"])],
    until=10,
    ordered=True,
)

case(
    "§2 timers of one user due in the same ms fire in the order they were set (keys)",
    abandon("10s", "    key: properties.cart\n"),
    [
        track("m1", "add_to_cart", 0, props={"cart": "b"}),
        track("m2", "add_to_cart", 0, props={"cart": "a"}),
    ],
    [fire("abandon", 10, ["m1"], key="b"), fire("abandon", 10, ["m2"], key="a")],
    until=10,
    ordered=True,
)

case(
    "§2 timers due in the same ms: a moved timer ranks by the event that last moved it",
    """
    triggers:
      alpha:
        when: x
        unless: never
        within: 10s
        restart: true
      zeta:
        when: y
        unless: never
        within: 11s
    """,
    [track("m1", "x", 0), track("m2", "y", 1), track("m3", "x", 2)],
    [fire("zeta", 12, ["m2"]), fire("alpha", 12, ["m1", "m3"])],
    until=12,
    ordered=True,
)

case(
    "§2 timers of one user due in the same ms fire in the order they were set (absence, inactivity)",
    """
    triggers:
      a_idle:
        inactive: 5s
        of: [x]
      b_abandon:
        when: add_to_cart
        unless: purchase
        within: 10s
    """,
    [track("m1", "add_to_cart", 0), track("m2", "x", 5)],
    [fire("b_abandon", 10, ["m1"]), fire("a_idle", 10, ["m2"])],
    until=10,
    ordered=True,
)

case(
    "§2 end of replay: a timer due exactly at --until fires",
    abandon("10s"),
    [track("m1", "add_to_cart", 0)],
    [fire("abandon", 10, ["m1"])],
    until=10,
)

case(
    "§2 end of replay: a timer due after --until does not fire",
    abandon("10s"),
    [track("m1", "add_to_cart", 0)],
    [],
    until=9.999,
)

case(
    "§2 end of replay: without --until, timers due up to the largest event time fire",
    abandon("10s"),
    [track("m1", "add_to_cart", 0, "u1"), track("m2", "other", 10, "u2")],
    [fire("abandon", 10, ["m1"], "u1")],
)

case(
    "§2 end of replay: windows still open after the largest event time do not fire",
    abandon("10s"),
    [track("m1", "add_to_cart", 0, "u1"), track("m2", "other", 9.999, "u2")],
    [],
)

case(
    "§2 end of replay: an --until before the largest event time does not hold timers back",
    abandon("10s"),
    [track("m1", "add_to_cart", 0, "u1"), track("m2", "other", 20, "u2")],
    [fire("abandon", 10, ["m1"], "u1")],
    until=5,
)

case(
    "§2 end of replay: an inactivity deadline after max(largest event, until) does not fire",
    inactive("10s"),
    [track("m1", "x", 0), track("m2", "x", 5, "u2")],
    [fire("idle", 10, ["m1"], "u1")],
    until=14.999,
)

case(
    "§2 a timer fires only once the watermark is past it: an unless at d arriving at watermark d closes",
    abandon("10s"),
    [track("m1", "add_to_cart", 0, "u1"), track("m2", "other", 15, "u2"), track("m3", "purchase", 10, "u1")],
    [],
    stats={"late": 0},
)

case(
    "§2 once the watermark is past a timer it has fired; a later unless for its window is late",
    abandon("10s"),
    [track("m1", "add_to_cart", 0, "u1"), track("m2", "other", 15.001, "u2"), track("m3", "purchase", 10, "u1")],
    [fire("abandon", 10, ["m1"], "u1")],
    stats={"late": 1},
)

case(
    "§2 allowed_lateness 0ms: an event in the same ms as the largest is accepted, earlier is late",
    buy(settings="settings:\n  allowed_lateness: 0ms\n"),
    [track("m1", "purchase", 10), track("m2", "purchase", 10), track("m3", "purchase", 9.999)],
    [fire("buy", 10, ["m1"]), fire("buy", 10, ["m2"])],
    stats={"late": 1, "accepted": 2},
)

case(
    "§1/§2 a messageId is a duplicate whichever user the repeat names",
    BUY,
    [track("m1", "purchase", 1, "u1"), track("m1", "purchase", 2, "u2")],
    [fire("buy", 1, ["m1"], "u1")],
    stats={"duplicate": 1},
)

case(
    "§2 fires of different users and triggers are emitted in fire-time order",
    """
    triggers:
      slow:
        when: a
        unless: never
        within: 20s
      fast:
        when: b
        unless: never
        within: 5s
    """,
    [track("m1", "a", 0, "u1"), track("m2", "b", 1, "u2"), track("m3", "b", 12, "u3")],
    [fire("fast", 6, ["m2"], "u2"), fire("fast", 17, ["m3"], "u3"), fire("slow", 20, ["m1"], "u1")],
    until=30,
    ordered=True,
)

# ====================================================================================
# §3.1 On event, and counts
# ====================================================================================

case(
    "§3.1 `when` alone is count 1: every matching event fires",
    BUY,
    [track("m1", "purchase", 1), track("m2", "purchase", 2)],
    [fire("buy", 1, ["m1"]), fire("buy", 2, ["m2"])],
)

case(
    "§3.1 an explicit count: 1 is the same as `when` alone",
    "triggers:\n  buy:\n    when: purchase\n    count: 1\n",
    [track("m1", "purchase", 1), track("m2", "purchase", 2)],
    [fire("buy", 1, ["m1"]), fire("buy", 2, ["m2"])],
)

case(
    "§3.1 `when` with a where filter (properties.total gte 500)",
    """
    triggers:
      vip_purchase:
        when: {event: purchase, where: {properties.total: {gte: 500}}}
    """,
    [
        track("m1", "purchase", 1, props={"total": 499}),
        track("m2", "purchase", 2, props={"total": 500}),
        track("m3", "purchase", 3, props={"total": 750.5}),
    ],
    [fire("vip_purchase", 2, ["m2"]), fire("vip_purchase", 3, ["m3"])],
)

case(
    "§3.1 a count fires at the event that completes it, naming the counted events",
    binge(3, "1h"),
    [track("m1", "song_played", 0), track("m2", "song_played", 600), track("m3", "song_played", 1200)],
    [fire("binge", 1200, ["m1", "m2", "m3"])],
)

case(
    "§3.1 an event at exactly t - within leaves the list",
    binge(2, "10s"),
    [track("m1", "song_played", 0), track("m2", "song_played", 10), track("m3", "song_played", 19.999)],
    [fire("binge", 19.999, ["m2", "m3"])],
)

case(
    "§3.1 an event just inside (t - within, t] stays in the list",
    binge(2, "10s"),
    [track("m1", "song_played", 0), track("m2", "song_played", 9.999)],
    [fire("binge", 9.999, ["m1", "m2"])],
)

case(
    "§3.1 the list is emptied on fire: the next fire needs count new events",
    binge(2),
    [
        track("m1", "song_played", 1),
        track("m2", "song_played", 2),
        track("m3", "song_played", 3),
        track("m4", "song_played", 4),
    ],
    [fire("binge", 2, ["m1", "m2"]), fire("binge", 4, ["m3", "m4"])],
)

case(
    "§3.1 events that do not match `when` do not join the list",
    binge(2),
    [track("m1", "song_played", 0), track("m2", "other", 1), track("m3", "song_played", 2)],
    [fire("binge", 2, ["m1", "m3"])],
)

case(
    "§3.1 each user keeps a list of their own",
    binge(2),
    [track("m1", "song_played", 0, "u1"), track("m2", "song_played", 1, "u2"), track("m3", "song_played", 2, "u1")],
    [fire("binge", 2, ["m1", "m3"], "u1")],
)

case(
    "§3.4 a count trigger without `within` counts over all time",
    binge(3),
    [track("m1", "song_played", 0), track("m2", "song_played", DAY), track("m3", "song_played", 30 * DAY)],
    [fire("binge", 30 * DAY, ["m1", "m2", "m3"])],
)

case(
    "§3.4 a suppressed count fire still empties the list",
    binge(2, extra="    cooldown: 10s\n"),
    [
        track("m1", "song_played", 0),
        track("m2", "song_played", 1),
        track("m3", "song_played", 2),
        track("m4", "song_played", 3),
        track("m5", "song_played", 11),
        track("m6", "song_played", 12),
    ],
    [
        fire("binge", 1, ["m1", "m2"]),
        fire("binge", 3, ["m3", "m4"], suppressed="cooldown"),
        fire("binge", 12, ["m5", "m6"]),
    ],
)

# ====================================================================================
# §3.2 Absence within a window
# ====================================================================================

case(
    "§3.2 a `when` event at t opens a window; it fires at t + within",
    abandon("10s"),
    [track("m1", "add_to_cart", 0)],
    [fire("abandon", 10, ["m1"])],
    until=20,
)

case(
    "§3.2 an unless event before the deadline closes the window with no fire",
    abandon("10s"),
    [track("m1", "add_to_cart", 0), track("m2", "purchase", 5)],
    [],
    until=20,
)

case(
    "§3.2 an unless event at exactly the deadline closes the window",
    abandon("10s"),
    [track("m1", "add_to_cart", 0), track("m2", "purchase", 10)],
    [],
    until=20,
)

case(
    "§3.2 an unless event after the deadline does not undo the fire",
    abandon("10s"),
    [track("m1", "add_to_cart", 0), track("m2", "purchase", 10.001)],
    [fire("abandon", 10, ["m1"])],
    until=20,
)

case(
    "§3.2 an unless event before the window opened has no effect on it",
    abandon("10s"),
    [track("m1", "purchase", 0), track("m2", "add_to_cart", 1)],
    [fire("abandon", 11, ["m2"])],
    until=20,
)

case(
    "§3.2 another user's unless event does not close the window",
    abandon("10s"),
    [track("m1", "add_to_cart", 0, "u1"), track("m2", "purchase", 5, "u2")],
    [fire("abandon", 10, ["m1"], "u1")],
    until=20,
)

case(
    "§3.2 restart false (default): a when event in an open window is ignored",
    abandon("10s"),
    [track("m1", "add_to_cart", 0), track("m2", "add_to_cart", 5)],
    [fire("abandon", 10, ["m1"])],
    until=20,
)

case(
    "§3.2 restart true: a when event moves the deadline to its time + within",
    abandon("10s", "    restart: true\n"),
    [track("m1", "add_to_cart", 0), track("m2", "add_to_cart", 5)],
    [fire("abandon", 15, ["m1", "m2"])],
    until=20,
)

case(
    "§3.2 restart true: an unless before the moved deadline closes the window",
    abandon("10s", "    restart: true\n"),
    [track("m1", "add_to_cart", 0), track("m2", "add_to_cart", 8), track("m3", "purchase", 15)],
    [],
    until=30,
)

case(
    "§3.2 the window closes at its fire; a later when event opens a new one",
    abandon("10s"),
    [track("m1", "add_to_cart", 0), track("m2", "add_to_cart", 5), track("m3", "add_to_cart", 12)],
    [fire("abandon", 10, ["m1"]), fire("abandon", 22, ["m3"])],
    until=30,
)

case(
    "§3.2 an event matching both unless and when first closes, then opens",
    """
    triggers:
      abandon:
        when: [add_to_cart, checkout]
        unless: checkout
        within: 10s
    """,
    [track("m1", "add_to_cart", 0), track("m2", "checkout", 5)],
    [fire("abandon", 15, ["m2"])],
    until=20,
)

case(
    "§3.2 an event matching both unless and when with no window open opens one",
    """
    triggers:
      abandon:
        when: [add_to_cart, checkout]
        unless: checkout
        within: 10s
    """,
    [track("m1", "checkout", 0)],
    [fire("abandon", 10, ["m1"])],
    until=20,
)

case(
    "§3.2/§2 restart false: a when event at exactly the deadline is ignored (window still open)",
    abandon("10s"),
    [track("m1", "add_to_cart", 0), track("m2", "add_to_cart", 10)],
    [fire("abandon", 10, ["m1"])],
    until=30,
)

case(
    "§3.2/§2 restart true: a when event at exactly the deadline moves it",
    abandon("10s", "    restart: true\n"),
    [track("m1", "add_to_cart", 0), track("m2", "add_to_cart", 10)],
    [fire("abandon", 20, ["m1", "m2"])],
    until=30,
)

case(
    "§3.4 a suppressed absence fire still closes the window",
    abandon("10s", NEVER_PRO),
    [track("m1", "add_to_cart", 0), track("m2", "add_to_cart", 5), track("m3", "add_to_cart", 12)],
    [fire("abandon", 10, ["m1"], suppressed="guard"), fire("abandon", 22, ["m3"], suppressed="guard")],
    until=25,
)

# ====================================================================================
# §3.3 Inactivity
# ====================================================================================

case(
    "§3.3 activity at t sets the deadline t + inactive; the fire names that activity",
    inactive("10s"),
    [page("m1", 0)],
    [fire("idle", 10, ["m1"])],
    until=15,
)

case(
    "§3.3 each activity moves the deadline; the fire names the last activity",
    inactive("10s"),
    [track("m1", "x", 0), page("m2", 5)],
    [fire("idle", 15, ["m2"])],
    until=20,
)

case(
    "§3.3 inactivity fires once per period",
    inactive("10s"),
    [track("m1", "x", 0)],
    [fire("idle", 10, ["m1"])],
    until=100,
)

case(
    "§3.3 inactivity fires again only after new activity and a new full period",
    inactive("10s"),
    [track("m1", "x", 0), track("m2", "x", 12)],
    [fire("idle", 10, ["m1"]), fire("idle", 22, ["m2"])],
    until=40,
)

case(
    "§3.3 `of` with names: only the listed activity counts",
    inactive("10s", "    of: [song_played]\n"),
    [track("m1", "song_played", 0), track("m2", "page_view", 5)],
    [fire("idle", 10, ["m1"])],
    until=20,
)

case(
    "§3.3/§3.4 `of` with a type matcher",
    inactive("10s", "    of: {type: page}\n"),
    [page("m1", 0), track("m2", "x", 5)],
    [fire("idle", 10, ["m1"])],
    until=20,
)

case(
    "§3.3 a user never seen (no counted activity) never fires",
    inactive("10s", "    of: [song_played]\n"),
    [track("m1", "song_played", 0, "u1"), track("m2", "page_view", 0, "u2"), identify("m3", 0, "u3")],
    [fire("idle", 10, ["m1"], "u1")],
    until=100,
)

case(
    "§3.4 a suppressed inactivity fire clears the deadline",
    inactive("10s", NEVER_PRO),
    [track("m1", "x", 0)],
    [fire("idle", 10, ["m1"], suppressed="guard")],
    until=100,
)

# ====================================================================================
# §3.4 where
# ====================================================================================

MISSING = None  # an event with no `properties` at all


def where_case(cid: str, where: str, props: list[dict[str, Any] | None], matches: list[int]) -> None:
    """Events e0, e1, ... (at 1s, 2s, ...) with `props`; those at `matches` fire."""
    rules = f"triggers:\n  w:\n    when: {{event: e, where: {where}}}\n"
    events = [track(f"e{i}", "e", i + 1, props=p) for i, p in enumerate(props)]
    case(cid, rules, events, [fire("w", i + 1, [f"e{i}"]) for i in matches])


where_case(
    "§3.4 where: a literal value means equality",
    "{properties.plan: pro}",
    [{"plan": "pro"}, {"plan": "Pro"}, {}],
    [0],
)
where_case(
    "§3.4 where eq: 1 == 1.0; a string or boolean never equals a number",
    "{properties.x: {eq: 1}}",
    [{"x": 1}, {"x": 1.0}, {"x": "1"}, {"x": True}, {"x": 2}],
    [0, 1],
)
where_case(
    "§3.4 where eq: a boolean equals only a boolean (true != 1)",
    "{properties.x: {eq: true}}",
    [{"x": True}, {"x": 1}, {"x": 1.0}, {"x": "true"}],
    [0],
)
where_case(
    "§3.4 where eq: false != 0",
    "{properties.x: {eq: 0}}",
    [{"x": 0}, {"x": False}, {"x": 0.0}],
    [0, 2],
)
where_case(
    '§3.4 where eq: "5" != 5 (string bound)',
    '{properties.x: {eq: "5"}}',
    [{"x": "5"}, {"x": 5}],
    [0],
)
where_case(
    '§3.4 where literal: 5 != "5" (number bound), 5 == 5.0',
    "{properties.x: 5}",
    [{"x": "5"}, {"x": 5}, {"x": 5.0}],
    [1, 2],
)
where_case(
    "§3.4 where eq null: a JSON null equals null; a missing path is false",
    "{properties.x: {eq: null}}",
    [{"x": None}, {}],
    [0],
)
where_case(
    "§3.4 where eq on lists follows JSON equality",
    "{properties.x: {eq: [1, 2]}}",
    [{"x": [1, 2]}, {"x": [1.0, 2]}, {"x": [2, 1]}, {"x": [True, 2]}],
    [0, 1],
)
where_case(
    "§3.4 where ne: JSON inequality, and true on a missing path",
    "{properties.x: {ne: 5}}",
    [{"x": 5}, {"x": 5.0}, {"x": "5"}, {"x": 6}, {}, {"x": None}],
    [2, 3, 4, 5],
)
where_case(
    "§3.4 where gt holds only between two numbers",
    "{properties.x: {gt: 10}}",
    [{"x": 11}, {"x": 10}, {"x": 10.5}, {"x": "11"}, {"x": None}, {}],
    [0, 2],
)
where_case(
    "§3.4 where gte: a boolean is not a number",
    "{properties.x: {gte: 0}}",
    [{"x": True}, {"x": False}, {"x": 0}, {"x": 1}],
    [2, 3],
)
where_case(
    "§3.4 where gt between two strings compares the strings",
    "{properties.x: {gt: b}}",
    [{"x": "c"}, {"x": "b"}, {"x": "ab"}, {"x": "ba"}, {"x": 5}],
    [0, 3],
)
where_case(
    "§3.4 where lt between a number and a string is false",
    '{properties.x: {lt: "9"}}',
    [{"x": 5}, {"x": "5"}, {"x": "10"}, {"x": 10}],
    [1, 2],
)
where_case(
    "§3.4 where gte/lte include their bound; operators in one mapping are ANDed",
    "{properties.x: {gte: 5, lte: 7}}",
    [{"x": 4.999}, {"x": 5}, {"x": 7}, {"x": 7.001}, {"x": 6.0}],
    [1, 2, 4],
)
where_case(
    "§3.4 where lt excludes its bound",
    "{properties.x: {lt: 5}}",
    [{"x": 5}, {"x": 4.9}, {"x": -1}],
    [1, 2],
)
where_case(
    "§3.4 where in: membership by JSON equality",
    "{properties.x: {in: [1, b]}}",
    [{"x": 1}, {"x": 1.0}, {"x": "b"}, {"x": True}, {"x": "1"}, {}],
    [0, 1, 2],
)
where_case(
    "§3.4 where in: a single value is a one-item list",
    "{properties.x: {in: b}}",
    [{"x": "b"}, {"x": "c"}],
    [0],
)
where_case(
    "§3.4 where not_in: false on a missing path, true on a value outside the list",
    "{properties.x: {not_in: [a, b]}}",
    [{"x": "c"}, {"x": "a"}, {}, {"x": None}],
    [0, 3],
)
where_case(
    "§3.4 where not_in: a single value is a one-item list",
    "{properties.x: {not_in: a}}",
    [{"x": "a"}, {"x": "b"}],
    [1],
)
where_case(
    "§3.4 where contains: a substring test on strings",
    "{properties.x: {contains: oo}}",
    [{"x": "foo"}, {"x": "bar"}, {"x": "OO"}, {}],
    [0],
)
where_case(
    "§3.4 where contains: an element test on lists, by JSON equality",
    "{properties.x: {contains: 1}}",
    [{"x": [1, 2]}, {"x": [1.0]}, {"x": [True]}, {"x": ["1"]}, {"x": [[1]]}, {"x": 1}],
    [0, 1],
)
where_case(
    "§3.4 where contains on a list tests its elements, not substrings of them",
    "{properties.x: {contains: vip}}",
    [{"x": ["vip", "a"]}, {"x": ["vipx"]}, {"x": "xvipx"}],
    [0, 2],
)
where_case(
    "§3.4 where starts_with holds only on strings",
    '{properties.x: {starts_with: "12"}}',
    [{"x": "123"}, {"x": 123}, {"x": ["123"]}, {"x": "312"}],
    [0],
)
where_case(
    "§3.4 where ends_with holds only on strings",
    '{properties.x: {ends_with: "23"}}',
    [{"x": "123"}, {"x": 123}, {"x": "231"}],
    [0],
)
where_case(
    "§3.4 where matches is an unanchored regex search",
    '{properties.x: {matches: "b+c"}}',
    [{"x": "abbcd"}, {"x": "ac"}, {"x": "BC"}, {}],
    [0],
)
where_case(
    "§3.4 where matches honours an anchor written in the pattern",
    '{properties.x: {matches: "^a"}}',
    [{"x": "ab"}, {"x": "ba"}],
    [0],
)
where_case(
    "§3.4 where matches holds only on strings",
    '{properties.x: {matches: "2"}}',
    [{"x": 123}, {"x": "123"}],
    [1],
)
where_case(
    "§3.4 where exists: true holds on a JSON null (and on falsy values)",
    "{properties.x: {exists: true}}",
    [{"x": None}, {"x": 0}, {"x": False}, {}],
    [0, 1, 2],
)
where_case(
    "§3.4 where exists: false holds only on a missing path",
    "{properties.x: {exists: false}}",
    [{}, {"x": None}, {"x": 0}, MISSING],
    [0, 3],
)
where_case(
    "§3.4 where: a path segment of digits indexes a list",
    "{properties.items.1.sku: A}",
    [
        {"items": [{"sku": "B"}, {"sku": "A"}]},
        {"items": [{"sku": "A"}]},
        {"items": [{"sku": "A"}, {"sku": "B"}]},
    ],
    [0],
)
where_case(
    "semantics where: a digit segment on an object is an ordinary key",
    "{properties.m.0: x}",
    [{"m": {"0": "x"}}, {"m": ["x"]}, {"m": {"1": "x"}}],
    [0, 1],
)
where_case(
    "§3.4 where: a path through a scalar or a non-digit segment into a list is missing",
    "{properties.x.y: {exists: false}}",
    [{"x": "s"}, {"x": 5}, {"x": {"y": 1}}, {"x": [1]}],
    [0, 1, 3],
)
where_case(
    "§3.4 where entries are ANDed",
    "{properties.a: 1, properties.b: 2}",
    [{"a": 1, "b": 2}, {"a": 1, "b": 3}, {"a": 1}],
    [0],
)
where_case(
    "§3.4 where any: [..] holds when one item holds",
    "{any: [{properties.a: 1}, {properties.b: 2}]}",
    [{"a": 1}, {"b": 2}, {"a": 2, "b": 1}],
    [0, 1],
)
where_case(
    "§3.4 where all: [..] holds when every item holds",
    "{all: [{properties.a: {gt: 1}}, {properties.a: {lt: 5}}]}",
    [{"a": 3}, {"a": 1}, {"a": 5}],
    [0],
)
where_case(
    "§3.4 where not: {..} negates (a missing path inside makes not true)",
    "{not: {properties.a: 1}}",
    [{"a": 1}, {"a": 2}, {}],
    [1, 2],
)
where_case(
    "§3.4 where combinators are ANDed with path entries",
    "{properties.a: 1, not: {properties.b: 2}}",
    [{"a": 1, "b": 3}, {"a": 1, "b": 2}, {"a": 2}],
    [0],
)
where_case(
    "§3.4 where combinators nest (not of any)",
    "{not: {any: [{properties.a: 1}, {properties.a: 2}]}}",
    [{"a": 1}, {"a": 2}, {"a": 3}],
    [2],
)

_OPS_ON_MISSING = {
    "op_eq": "{eq: 1}",
    "op_ne": "{ne: 1}",
    "op_gt": "{gt: 1}",
    "op_gte": "{gte: 1}",
    "op_lt": "{lt: 1}",
    "op_lte": "{lte: 1}",
    "op_in": "{in: [1]}",
    "op_not_in": "{not_in: [1]}",
    "op_contains": "{contains: a}",
    "op_starts_with": "{starts_with: a}",
    "op_ends_with": "{ends_with: a}",
    "op_matches": '{matches: ".*"}',
    "op_exists_true": "{exists: true}",
    "op_exists_false": "{exists: false}",
}
case(
    "§3.4 a missing path is false for every operator but exists: false and ne",
    "triggers:\n"
    + "".join(
        f"  {name}:\n    when: {{event: e, where: {{properties.x: {ops}}}}}\n" for name, ops in _OPS_ON_MISSING.items()
    ),
    [track("m1", "e", 1, props={"y": 1})],
    [fire("op_ne", 1, ["m1"]), fire("op_exists_false", 1, ["m1"])],
)

case(
    "§3.4 where reaches context paths",
    """
    triggers:
      pricing:
        when: {type: page, where: {context.page.path: /pricing}}
    """,
    [
        page("m1", 1, context={"page": {"path": "/pricing"}}),
        page("m2", 2, context={"page": {"path": "/home"}}),
    ],
    [fire("pricing", 1, ["m1"])],
)

case(
    "§3.4 where reaches traits of an identify event",
    """
    triggers:
      went_pro:
        when: {type: identify, where: {traits.plan: pro}}
    """,
    [identify("m1", 1, traits={"plan": "free"}), identify("m2", 2, traits={"plan": "pro"})],
    [fire("went_pro", 2, ["m2"])],
)

# ====================================================================================
# §3.4 matchers
# ====================================================================================

case(
    "§3.4 a `when` list matches any of its names",
    "triggers:\n  t:\n    when: [a, b]\n",
    [track("m1", "a", 1), track("m2", "b", 2), track("m3", "c", 3)],
    [fire("t", 1, ["m1"]), fire("t", 2, ["m2"])],
)

case(
    "§3.4 {event: [NAMES]} matches any of the names",
    "triggers:\n  t:\n    when: {event: [a, b]}\n",
    [track("m1", "a", 1), track("m2", "b", 2), track("m3", "c", 3)],
    [fire("t", 1, ["m1"]), fire("t", 2, ["m2"])],
)

case(
    "§3.4 {type: [TYPES]} matches any of the types",
    "triggers:\n  t:\n    when: {type: [page, screen]}\n",
    [page("m1", 1), screen("m2", 2), track("m3", "a", 3)],
    [fire("t", 1, ["m1"]), fire("t", 2, ["m2"])],
)

case(
    "§3.4 {type: TYPE} with a single type",
    "triggers:\n  t:\n    when: {type: track}\n",
    [page("m1", 1), track("m2", "a", 2)],
    [fire("t", 2, ["m2"])],
)

case(
    "§3.4 a mapping matcher needs all its keys to hold (event and where)",
    "triggers:\n  t:\n    when: {event: a, where: {properties.x: 1}}\n",
    [
        track("m1", "a", 1, props={"x": 1}),
        track("m2", "a", 2, props={"x": 2}),
        track("m3", "b", 3, props={"x": 1}),
    ],
    [fire("t", 1, ["m1"])],
)

case(
    "§3.4 a mapping matcher needs all its keys to hold (event and type)",
    "triggers:\n  t:\n    when: {event: a, type: track}\n",
    [track("m1", "a", 1), {"event": "a", "userId": "u1", "messageId": "m2", "timestamp": at(2)}],
    [fire("t", 1, ["m1"]), fire("t", 2, ["m2"])],
)

case(
    "§3.4 an `unless` mapping matcher with where",
    """
    triggers:
      abandon:
        when: add_to_cart
        unless: {event: purchase, where: {properties.total: {gt: 0}}}
        within: 10s
    """,
    [
        track("m1", "add_to_cart", 0, "u1"),
        track("m2", "add_to_cart", 0, "u2"),
        track("m3", "purchase", 5, "u1", props={"total": 0}),
        track("m4", "purchase", 5, "u2", props={"total": 5}),
    ],
    [fire("abandon", 10, ["m1"], "u1")],
    until=20,
)

case(
    "§3.4 an `unless` list closes on any of its names",
    """
    triggers:
      abandon:
        when: add_to_cart
        unless: [purchase, clear_cart]
        within: 10s
    """,
    [
        track("m1", "add_to_cart", 0, "u1"),
        track("m2", "add_to_cart", 0, "u2"),
        track("m3", "add_to_cart", 0, "u3"),
        track("m4", "purchase", 5, "u1"),
        track("m5", "clear_cart", 5, "u2"),
    ],
    [fire("abandon", 10, ["m3"], "u3")],
    until=20,
)

case(
    "semantics `unless` matches events of every type ({type: identify})",
    """
    triggers:
      unidentified:
        when: add_to_cart
        unless: {type: identify}
        within: 10s
    """,
    [
        track("m1", "add_to_cart", 0, "u1"),
        track("m2", "add_to_cart", 0, "u2"),
        identify("m3", 5, "u1"),
    ],
    [fire("unidentified", 10, ["m2"], "u2")],
    until=20,
)

# ====================================================================================
# §3.4 key
# ====================================================================================

KEYED = abandon("10s", "    key: properties.cart\n")

case(
    "§3.4 key: a separate window for each value; the fire carries the value",
    KEYED,
    [
        track("m1", "add_to_cart", 0, props={"cart": "c1"}),
        track("m2", "add_to_cart", 1, props={"cart": "c2"}),
    ],
    [fire("abandon", 10, ["m1"], key="c1"), fire("abandon", 11, ["m2"], key="c2")],
    until=20,
)

case(
    "§3.4 key: 1 and 1.0 are the same key; the fire has the opener's value",
    KEYED,
    [
        track("m1", "add_to_cart", 0, props={"cart": 1}),
        track("m2", "add_to_cart", 1, props={"cart": 1.0}),
    ],
    [fire("abandon", 10, ["m1"], key=1)],
    until=20,
)

case(
    '§3.4 key: true and 1 are different keys, "5" and 5 too',
    KEYED,
    [
        track("m1", "add_to_cart", 0, props={"cart": True}),
        track("m2", "add_to_cart", 0.001, props={"cart": 1}),
        track("m3", "add_to_cart", 0.002, props={"cart": "5"}),
        track("m4", "add_to_cart", 0.003, props={"cart": 5}),
    ],
    [
        fire("abandon", 10, ["m1"], key=True),
        fire("abandon", 10.001, ["m2"], key=1),
        fire("abandon", 10.002, ["m3"], key="5"),
        fire("abandon", 10.003, ["m4"], key=5),
    ],
    until=20,
)

case(
    "§3.4 key: a missing path and a JSON null are one key, null",
    KEYED,
    [track("m1", "add_to_cart", 0, props={}), track("m2", "add_to_cart", 1, props={"cart": None})],
    [fire("abandon", 10, ["m1"], key=None)],
    until=20,
)

case(
    "§3.4 key: an unless event closes only the window with its own value",
    KEYED,
    [
        track("m1", "add_to_cart", 0, props={"cart": "c1"}),
        track("m2", "add_to_cart", 1, props={"cart": "c2"}),
        track("m3", "add_to_cart", 2),
        track("m4", "purchase", 5, props={"cart": "c1"}),
    ],
    [fire("abandon", 11, ["m2"], key="c2"), fire("abandon", 12, ["m3"], key=None)],
    until=20,
)

case(
    "§3.4 key: an unless event equal by JSON (1.0 for 1) closes that window",
    KEYED,
    [track("m1", "add_to_cart", 0, props={"cart": 1}), track("m2", "purchase", 5, props={"cart": 1.0})],
    [],
    until=20,
)

case(
    "§3.4 key: an unless event without a value at the path closes every window of the user",
    KEYED,
    [
        track("m1", "add_to_cart", 0, "u1", props={"cart": "c1"}),
        track("m2", "add_to_cart", 1, "u1", props={"cart": "c2"}),
        track("m3", "add_to_cart", 0, "u2", props={"cart": "c1"}),
        track("m4", "purchase", 5, "u1"),
    ],
    [fire("abandon", 10, ["m3"], "u2", key="c1")],
    until=20,
)

case(
    "semantics key: an unless event with a JSON null at the path closes every window",
    KEYED,
    [
        track("m1", "add_to_cart", 0, props={"cart": "c1"}),
        track("m2", "add_to_cart", 1, props={"cart": "c2"}),
        track("m3", "purchase", 5, props={"cart": None}),
    ],
    [],
    until=20,
)

case(
    "§3.4 key on a count: a separate list per value",
    binge(2, extra="    key: properties.sku\n"),
    [
        track("m1", "song_played", 0, props={"sku": "a"}),
        track("m2", "song_played", 1, props={"sku": "b"}),
        track("m3", "song_played", 2, props={"sku": "a"}),
        track("m4", "song_played", 3, props={"sku": "b"}),
    ],
    [fire("binge", 2, ["m1", "m3"], key="a"), fire("binge", 3, ["m2", "m4"], key="b")],
)

case(
    "§3.4 key: list values equal by JSON ([1, 2] and [1.0, 2]) are one key",
    KEYED,
    [
        track("m1", "add_to_cart", 0, props={"cart": [1, 2]}),
        track("m2", "add_to_cart", 1, props={"cart": [1.0, 2]}),
        track("m3", "add_to_cart", 2, props={"cart": [2, 1]}),
    ],
    [fire("abandon", 10, ["m1"], key=[1, 2]), fire("abandon", 12, ["m3"], key=[2, 1])],
    until=20,
)

case(
    "§3.4 key with restart: each key's window moves on its own",
    abandon("10s", "    key: properties.cart\n    restart: true\n"),
    [
        track("m1", "add_to_cart", 0, props={"cart": "c1"}),
        track("m2", "add_to_cart", 1, props={"cart": "c2"}),
        track("m3", "add_to_cart", 5, props={"cart": "c1"}),
    ],
    [fire("abandon", 11, ["m2"], key="c2"), fire("abandon", 15, ["m1", "m3"], key="c1")],
    until=20,
)

case(
    "§3.4 cooldown stays per trigger and user across keys",
    abandon("10s", "    key: properties.cart\n    cooldown: 1h\n"),
    [
        track("m1", "add_to_cart", 0, props={"cart": "c1"}),
        track("m2", "add_to_cart", 1, props={"cart": "c2"}),
    ],
    [
        fire("abandon", 10, ["m1"], key="c1"),
        fire("abandon", 11, ["m2"], key="c2", suppressed="cooldown"),
    ],
    until=20,
)

# ====================================================================================
# §3.4 cooldown
# ====================================================================================

case(
    "§3.4 cooldown: fires before f + D are suppressed; a fire at exactly f + D is allowed",
    buy("    cooldown: 10s\n"),
    [
        track("m1", "purchase", 0),
        track("m2", "purchase", 5),
        track("m3", "purchase", 9.999),
        track("m4", "purchase", 10),
        track("m5", "purchase", 19.999),
        track("m6", "purchase", 20),
    ],
    [
        fire("buy", 0, ["m1"]),
        fire("buy", 5, ["m2"], suppressed="cooldown"),
        fire("buy", 9.999, ["m3"], suppressed="cooldown"),
        fire("buy", 10, ["m4"]),
        fire("buy", 19.999, ["m5"], suppressed="cooldown"),
        fire("buy", 20, ["m6"]),
    ],
)

case(
    "§3.4 cooldown: a second fire in the same millisecond is suppressed",
    buy("    cooldown: 10s\n"),
    [track("m1", "purchase", 0), track("m2", "purchase", 0)],
    [fire("buy", 0, ["m1"]), fire("buy", 0, ["m2"], suppressed="cooldown")],
    ordered=True,
)

case(
    "§3.4 cooldown of 0: a second fire in the same millisecond is not suppressed",
    buy("    cooldown: 0s\n"),
    [track("m1", "purchase", 0), track("m2", "purchase", 0)],
    [fire("buy", 0, ["m1"]), fire("buy", 0, ["m2"])],
    ordered=True,
)

case(
    "§3.4 suppressed fires do not start a cooldown",
    buy("    cooldown: 10s\n"),
    [track("m1", "purchase", 0), track("m2", "purchase", 8), track("m3", "purchase", 10)],
    [fire("buy", 0, ["m1"]), fire("buy", 8, ["m2"], suppressed="cooldown"), fire("buy", 10, ["m3"])],
)

case(
    "§3.4 cooldown is checked before guards",
    buy("    cooldown: 10s\n" + NEVER_PRO),
    [
        identify("m1", 0, traits={"plan": "pro"}),
        track("m2", "purchase", 1),
        identify("m3", 2, traits={"plan": "free"}),
        track("m4", "purchase", 3),
        track("m5", "purchase", 12),
        identify("m6", 13, traits={"plan": "pro"}),
        track("m7", "purchase", 14),
    ],
    [
        fire("buy", 1, ["m2"]),
        fire("buy", 3, ["m4"], suppressed="cooldown"),
        fire("buy", 12, ["m5"], suppressed="guard"),
        fire("buy", 14, ["m7"]),
    ],
)

case(
    "§3.4 a fire suppressed by a guard does not start a cooldown",
    buy("    cooldown: 10s\n" + NEVER_PRO),
    [track("m1", "purchase", 0), identify("m2", 1, traits={"plan": "pro"}), track("m3", "purchase", 2)],
    [fire("buy", 0, ["m1"], suppressed="guard"), fire("buy", 2, ["m3"])],
)

case(
    "§3.4 cooldown is per trigger and per user",
    """
    triggers:
      buy:
        when: purchase
        cooldown: 1h
      buy_too:
        when: purchase
        cooldown: 1h
    """,
    [track("m1", "purchase", 0, "u1"), track("m2", "purchase", 1, "u2")],
    [
        fire("buy", 0, ["m1"], "u1"),
        fire("buy_too", 0, ["m1"], "u1"),
        fire("buy", 1, ["m2"], "u2"),
        fire("buy_too", 1, ["m2"], "u2"),
    ],
)

case(
    "§3.4 cooldown applies to timer fires too",
    abandon("10s", "    cooldown: 1h\n"),
    [track("m1", "add_to_cart", 0), track("m2", "add_to_cart", 12)],
    [fire("abandon", 10, ["m1"]), fire("abandon", 22, ["m2"], suppressed="cooldown")],
    until=30,
)

case(
    "§3.4 cooldown applies to inactivity fires",
    inactive("10s", "    cooldown: 1h\n"),
    [track("m1", "x", 0), track("m2", "x", 12)],
    [fire("idle", 10, ["m1"]), fire("idle", 22, ["m2"], suppressed="cooldown")],
    until=30,
)

# ====================================================================================
# §3.4 guards (if)
# ====================================================================================

case(
    "§3.4 a trait guard holds on the user's merged traits; a false guard suppresses",
    guarded("{trait: plan, eq: pro}"),
    [
        identify("m1", 0, "u1", traits={"plan": "pro"}),
        track("m2", "purchase", 1, "u1"),
        track("m3", "purchase", 1, "u2"),
    ],
    [fire("buy", 1, ["m2"], "u1"), fire("buy", 1, ["m3"], "u2", suppressed="guard")],
)

case(
    "§3.4 a trait guard takes where operators (gte, JSON typing)",
    guarded("{trait: age, gte: 18}"),
    [
        identify("m1", 0, "u1", traits={"age": 18}),
        identify("m2", 0, "u2", traits={"age": 17}),
        identify("m3", 0, "u3", traits={"age": "18"}),
        track("m4", "purchase", 1, "u1"),
        track("m5", "purchase", 1, "u2"),
        track("m6", "purchase", 1, "u3"),
    ],
    [
        fire("buy", 1, ["m4"], "u1"),
        fire("buy", 1, ["m5"], "u2", suppressed="guard"),
        fire("buy", 1, ["m6"], "u3", suppressed="guard"),
    ],
)

case(
    "§3.4 a trait guard with exists: false holds when the trait is missing",
    guarded("{trait: plan, exists: false}"),
    [track("m1", "purchase", 1, "u1"), identify("m2", 1, "u2", traits={"plan": "x"}), track("m3", "purchase", 2, "u2")],
    [fire("buy", 1, ["m1"], "u1"), fire("buy", 2, ["m3"], "u2", suppressed="guard")],
)

case(
    "§3.4 guards are ANDed",
    guarded("{trait: plan, eq: pro}", "{did: view, within: 1h}"),
    [
        identify("m1", 0, "u1", traits={"plan": "pro"}),
        identify("m2", 0, "u2", traits={"plan": "pro"}),
        track("m3", "view", 1, "u1"),
        track("m4", "view", 1, "u3"),
        track("m5", "purchase", 2, "u1"),
        track("m6", "purchase", 2, "u2"),
        track("m7", "purchase", 2, "u3"),
    ],
    [
        fire("buy", 2, ["m5"], "u1"),
        fire("buy", 2, ["m6"], "u2", suppressed="guard"),
        fire("buy", 2, ["m7"], "u3", suppressed="guard"),
    ],
)

case(
    "§3.4 did looks in [fire_time - D, fire_time]: activity at exactly fire_time - D counts",
    guarded("{did: view, within: 1m}"),
    [
        track("m1", "view", 0, "u1"),
        track("m2", "view", 0, "u2"),
        track("m3", "purchase", 60, "u1"),
        track("m4", "purchase", 60.001, "u2"),
    ],
    [fire("buy", 60, ["m3"], "u1"), fire("buy", 60.001, ["m4"], "u2", suppressed="guard")],
)

case(
    "§3.4 did min_count: at least N matching activities",
    guarded("{did: view, within: 1h, min_count: 2}"),
    [
        track("m1", "view", 0, "u1"),
        track("m2", "view", 1, "u1"),
        track("m3", "view", 0, "u2"),
        track("m4", "purchase", 2, "u1"),
        track("m5", "purchase", 2, "u2"),
    ],
    [fire("buy", 2, ["m4"], "u1"), fire("buy", 2, ["m5"], "u2", suppressed="guard")],
)

case(
    "§3.4 a did guard counts the event that caused the fire",
    guarded("{did: view, within: 1m, min_count: 2}", name="viewed", when="view"),
    [track("m1", "view", 0), track("m2", "view", 1)],
    [fire("viewed", 0, ["m1"], suppressed="guard"), fire("viewed", 1, ["m2"])],
)

case(
    "§3.4 a did_not guard sees the event that caused the fire",
    guarded("{did_not: view, within: 1m}", name="viewed", when="view"),
    [track("m1", "view", 0)],
    [fire("viewed", 0, ["m1"], suppressed="guard")],
)

case(
    "§3.4 did_not: no activity in [fire_time - D, fire_time], bound included",
    guarded("{did_not: view, within: 1m}"),
    [
        track("m1", "view", 0, "u1"),
        track("m2", "view", 0, "u2"),
        track("m3", "purchase", 60, "u1"),
        track("m4", "purchase", 60.001, "u2"),
        track("m5", "purchase", 60.001, "u3"),
    ],
    [
        fire("buy", 60, ["m3"], "u1", suppressed="guard"),
        fire("buy", 60.001, ["m4"], "u2"),
        fire("buy", 60.001, ["m5"], "u3"),
    ],
)

case(
    "§3.4 did looks at activity events only (an identify its where matches does not count)",
    """
    triggers:
      grouped:
        when: {type: group}
        if:
          - {did: {where: {context.source: web}}, within: 1h}
    """,
    [
        identify("m1", 0, "u1") | WEB,
        track("m2", "x", 0, "u2") | WEB,
        group("m3", 1, "u1"),
        group("m4", 1, "u2"),
    ],
    [fire("grouped", 1, ["m3"], "u1", suppressed="guard"), fire("grouped", 1, ["m4"], "u2")],
)

case(
    "§3.4 guards of a timer fire are checked at the fire time",
    abandon("10s", "    if:\n      - {did: view, within: 5s}\n"),
    [
        track("m1", "add_to_cart", 0, "u1"),
        track("m2", "add_to_cart", 0, "u2"),
        track("m3", "view", 7, "u1"),
        track("m4", "view", 4.999, "u2"),
    ],
    [fire("abandon", 10, ["m1"], "u1"), fire("abandon", 10, ["m2"], "u2", suppressed="guard")],
    until=20,
)

case(
    "§3.4/§2 a timer fire's guard sees activity at its fire time, not after",
    abandon("10s", "    if:\n      - {did_not: view, within: 10s}\n"),
    [
        track("m1", "add_to_cart", 0, "u1"),
        track("m2", "add_to_cart", 0, "u2"),
        track("m3", "view", 10, "u1"),
        track("m4", "view", 10.001, "u2"),
    ],
    [fire("abandon", 10, ["m1"], "u1", suppressed="guard"), fire("abandon", 10, ["m2"], "u2")],
)

case(
    "§3.4 a trait guard of a timer fire uses the traits at fire time",
    abandon("10s", "    if:\n      - {trait: plan, eq: pro}\n"),
    [track("m1", "add_to_cart", 0), identify("m2", 5, traits={"plan": "pro"})],
    [fire("abandon", 10, ["m1"])],
    until=20,
)

# ====================================================================================
# §3.4 durations
# ====================================================================================

for _text, _seconds in (
    ("500ms", 0.5),
    ("30s", 30),
    ("15m", 15 * MINUTE),
    ("24h", 24 * HOUR),
    ("7d", 7 * DAY),
    ("2w", 2 * WEEK),
):
    case(
        f"§3.4 duration unit: {_text}",
        abandon(_text),
        [track("m1", "add_to_cart", 0)],
        [fire("abandon", _seconds, ["m1"])],
        until=_seconds,
    )

case(
    "§3.4 durations apply to inactive and cooldown alike (d and ms)",
    inactive("1d", "    cooldown: 1500ms\n"),
    [track("m1", "x", 0)],
    [fire("idle", DAY, ["m1"])],
    until=2 * DAY,
)

# ====================================================================================
# semantics: bad events and messageIds
# ====================================================================================

case(
    "semantics a numeric userId is a bad event; good events are still processed",
    BUY,
    [
        {"type": "track", "event": "purchase", "userId": 123, "messageId": "m1", "timestamp": at(1)},
        track("m2", "purchase", 2),
    ],
    [fire("buy", 2, ["m2"])],
    stats={"bad": 1, "accepted": 1},
)

case(
    "semantics an unknown type is a bad event",
    BUY,
    [
        {"type": "purchase", "event": "purchase", "userId": "u1", "messageId": "m1", "timestamp": at(1)},
        track("m2", "purchase", 2),
    ],
    [fire("buy", 2, ["m2"])],
    stats={"bad": 1, "accepted": 1},
)

case(
    "§1 an event with neither userId nor anonymousId is bad",
    BUY,
    [
        {"type": "track", "event": "purchase", "messageId": "m1", "timestamp": at(1)},
        track("m2", "purchase", 2),
    ],
    [fire("buy", 2, ["m2"])],
    stats={"bad": 1, "accepted": 1},
)

case(
    "semantics an event without a timestamp (and no skew fields) is bad",
    BUY,
    [{"type": "track", "event": "purchase", "userId": "u1", "messageId": "m1"}, track("m2", "purchase", 2)],
    [fire("buy", 2, ["m2"])],
    stats={"bad": 1, "accepted": 1},
)

case(
    "semantics an empty-string userId is a bad event",
    BUY,
    [{"type": "track", "event": "purchase", "userId": "", "messageId": "m1", "timestamp": at(1)}],
    [],
    stats={"bad": 1, "accepted": 0},
)

case(
    "§2/semantics a bad event is not accepted, so its messageId is not remembered",
    BUY,
    [
        {"type": "track", "event": "purchase", "userId": 7, "messageId": "m1", "timestamp": at(1)},
        track("m1", "purchase", 2),
    ],
    [fire("buy", 2, ["m1"])],
    stats={"bad": 1, "accepted": 1, "duplicate": 0},
)

case(
    "semantics events without messageId get auto- ids and are never each other's duplicates",
    binge(2),
    [
        {"type": "track", "event": "song_played", "userId": "u1", "timestamp": at(1)},
        {"type": "track", "event": "song_played", "userId": "u1", "timestamp": at(1)},
    ],
    [fire("binge", 1, [AUTO_ID, AUTO_ID])],
    stats={"accepted": 2, "duplicate": 0},
)
