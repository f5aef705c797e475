"""The goals contract: what the conversion sweep reads and records, on every adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

from tripwire.actions.goals import sweep
from tripwire.rules import load_rules
from tripwire.store import FireRow, Goals, LogRow, Stores


@pytest.fixture
def goals(stores: Stores) -> Goals:
    return stores.goals


def event(
    mid: str, ts: int, name: str, user: str | None = "u1", anon: str | None = None, decision: str = "accepted"
) -> LogRow:
    body = b'{"type":"track","event":%s,"messageId":"%s"}' % (name.encode(), mid.encode())
    return LogRow(0, mid, user, anon, ts, ts, decision, body)


def fire(
    fid: str, at: int, trigger: str = "t", user: str = "u1", suppressed: str | None = None, holdout: bool = False
) -> FireRow:
    return FireRow(fid, trigger, user, None, at, (), suppressed, None, at, holdout)


def test_the_cursor_starts_at_zero_and_is_saved(goals: Goals) -> None:
    assert goals.cursor() == (0, 0)
    goals.save_cursor(3, 7)
    goals.save_cursor(4, 9)
    assert goals.cursor() == (4, 9)


def test_fires_after_skip_suppressed_and_other_triggers(stores: Stores, goals: Goals) -> None:
    assert goals.last_fire() == 0
    with stores.store.write() as batch:
        batch.add_fires([fire("f1", 10), fire("f2", 20, suppressed="cap"), fire("f3", 30, trigger="x"),
                         fire("f4", 40, holdout=True)])  # fmt: skip
    after = goals.fires_after(0, ["t"])
    assert [(fid, trigger, uid, at, held) for _, fid, trigger, uid, at, held in after] == [
        ("f1", "t", "u1", 10, False), ("f4", "t", "u1", 40, True),
    ]  # fmt: skip
    first_n = after[0][0]
    assert [fid for _, fid, *_ in goals.fires_after(first_n, ["t", "x"])] == ["f3", "f4"]
    assert [fid for _, fid, *_ in goals.fires_after(0, ["t", "x"], limit=1)] == ["f1"]
    assert goals.last_fire() == after[-1][0]


def test_events_after_read_accepted_events_by_name(stores: Stores, goals: Goals) -> None:
    assert goals.last_event() == 0
    with stores.store.write() as batch:
        batch.append_events([
            event("m1", 1, '"purchase"'), event("m2", 2, '"view"'), event("m3", 3, '"purchase"', decision="late"),
            event("m4", 4, '"caf\\u00e9 \\"x\\" \\\\u0000","p":"\\u0000\\u0000"'),
            event("m5", 5, '"purchase"', user=None, anon="a1"),
            LogRow(0, "m6", "u1", None, 6, 6, "accepted", b'{"type":"identify","traits":{"nul":"\\u0000"}}'),
        ])  # fmt: skip
    every = goals.events_after(0)
    assert [mid for _, mid, *_ in every] == ["m1", "m2", "m4", "m5", "m6"]
    assert [mid for _, mid, *_ in goals.events_after(0, ["purchase"])] == ["m1", "m5"]
    assert [mid for _, mid, *_ in goals.events_after(0, ['café "x" \\u0000'])] == ["m4"]
    assert goals.events_after(0, []) == []
    seq, mid, ts, body, uid, anon = every[-2]
    assert (mid, ts, uid, anon) == ("m5", 5, None, "a1") and body.startswith(b'{"type":"track"')
    assert [mid for _, mid, *_ in goals.events_after(seq)] == ["m6"]
    assert [mid for _, mid, *_ in goals.events_after(0, limit=2)] == ["m1", "m2"]
    assert goals.last_event() == every[-1][0]


def test_events_between_find_a_users_events_by_either_id(stores: Stores, goals: Goals) -> None:
    with stores.store.write() as batch:
        batch.append_events([event("m1", 30, '"a"', user=None, anon="x"), event("m2", 10, '"a"'),
                             event("m3", 20, '"a"', user="u2"), event("m4", 40, '"a"', decision="duplicate"),
                             event("m5", 50, '"a"')])  # fmt: skip
    assert [mid for mid, _, _ in goals.events_between(["u1", "x"], 0, 50)] == ["m2", "m1", "m5"]
    assert [(mid, ts) for mid, ts, _ in goals.events_between(["u1", "x"], 10, 49)] == [("m1", 30)]


def test_a_conversion_is_recorded_once_and_closes_its_fire(stores: Stores, goals: Goals) -> None:
    with stores.store.write() as batch:
        batch.add_fires([fire("f1", 10), fire("f2", 20, holdout=True), fire("f3", 30, suppressed="guard"),
                         fire("f4", 40, user="u2"), fire("f5", 50)])  # fmt: skip
    assert goals.open_fires_of("t", "u1", 10, 50) == [("f1", False), ("f2", True)]
    assert goals.record("f1", "t", "u1", False, "m9", 60) is True
    assert goals.record("f1", "t", "u1", False, "m10", 70) is False
    assert goals.record("f2", "t", "u1", True, "m9", 60) is True
    assert goals.open_fires_of("t", "u1", 0, 100) == [("f5", False)]
    assert goals.stats() == {"t": {"fires": 3, "holdout": 1, "conversions": 1, "holdout_conversions": 1}}


def test_links_as_the_sweep_reads_them(stores: Stores, goals: Goals) -> None:
    with stores.store.write() as batch:
        batch.save_links({"a1": "u1", "a2": "u1", "a3": "u2"})
    assert goals.links() == {"a1": "u1", "a2": "u1", "a3": "u2"}
    assert sorted(goals.links_to("u1")) == ["a1", "a2"]


def test_the_goal_sweep_finds_conversions_whichever_comes_first(stores: Stores, tmp_path: Path) -> None:
    """The sweep (actions/goals.py) on each adapter: goal events before and after their fire,
    an anonymous goal event of a linked user, a held-out fire, one outside the period."""
    path = tmp_path / "rules.yaml"
    path.write_text("triggers:\n  buy: {when: buy, goal: {event: upgrade, within: 1h}}\n")
    rules = load_rules(path)
    hour = 3_600_000
    with stores.store.write() as batch:
        batch.add_fires([fire("f1", 1_000, trigger="buy"), fire("f2", 1_000, trigger="buy", user="u2", holdout=True),
                         fire("f3", 1_000, trigger="buy", user="u3")])  # fmt: skip
        batch.append_events([event("g1", 2_000, '"upgrade"'), event("g3", 1_000 + hour + 1, '"upgrade"', user="u3"),
                             event("v1", 2_000, '"view"', user="u2")])  # fmt: skip
    assert sweep(stores.goals, rules, 10) == 1  # f1 by g1; g3 came too late for f3
    with stores.store.write() as batch:
        batch.save_links({"anon-4": "u4"})
        batch.add_fires([fire("f4", 5_000, trigger="buy", user="u4")])
        batch.append_events([event("g2", 3_000, '"upgrade"', user="u2"), event("g4", 6_000, '"upgrade"', user=None,
                             anon="anon-4")])  # fmt: skip
    assert sweep(stores.goals, rules, 20) == 2  # f2 (held out) by g2, f4 by the anonymous g4
    assert sweep(stores.goals, rules, 30) == 0
    assert stores.goals.stats() == {"buy": {"fires": 3, "holdout": 1, "conversions": 2, "holdout_conversions": 1}}
    assert stores.goals.open_fires_of("buy", "u3", 0, 10 * hour) == [("f3", False)]
