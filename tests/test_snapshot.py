"""Per-user state can be saved and loaded: a restored engine goes on exactly as the original."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.engine import Engine, Fire
from tripwire.events import parse_event
from tripwire.rules import parse_rules
from tripwire.timestamps import format_ms

RULES = parse_rules("""
settings: {allowed_lateness: 2s}
triggers:
  cart: {when: add, unless: buy, within: 20s, restart: true, key: properties.k, cooldown: 30s}
  once: {when: add, unless: buy, within: 15s}
  binge: {when: song, count: 3, within: 10s, key: properties.k}
  idle: {inactive: 25s, if: [{did: song, within: 40s, min_count: 2}, {trait: plan, ne: free}]}
  buy: {when: buy, if: {did_not: song, within: 5s}}
  pro: {when: view, if: {trait: plan, eq: pro}}
""")

NAMES = ["add", "buy", "song", "view"]


def stream(seed: int, n: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    t = 1_772_323_200_000
    out = []
    for i in range(n):
        t += rnd.choice([0, 0, 500, 1000, 3000, 9000])
        jitter = rnd.choice([0, 0, 0, -1000, -2500])
        user = rnd.choice(["u1", "u2", "u3", "a1"])
        if rnd.random() < 0.08:
            obj: dict[str, Any] = {"type": "identify", "userId": user, "traits": {"plan": rnd.choice(["free", "pro"])}}
            if rnd.random() < 0.5:
                obj["anonymousId"] = "a1"
        else:
            obj = {"type": "track", "event": rnd.choice(NAMES), "properties": {"k": rnd.choice([1, 2, 1.0])}}
            obj["anonymousId" if user == "a1" else "userId"] = user
        mid = f"m{rnd.randrange(i + 1)}" if rnd.random() < 0.05 else f"m{i}"
        obj.update(messageId=mid, timestamp=format_ms(t + jitter))
        out.append(obj)
    return out


def run_through(engine: Engine, events: list[dict[str, Any]], saved: dict[str, bytes] | None = None) -> list[Fire]:
    """Feed events in small batches; after each, save the users the engine marked dirty, as the server does."""
    fires: list[Fire] = []
    for i in range(0, len(events), 7):
        engine.ingest(parse_event(dict(e)) for e in events[i : i + 7])
        fires += engine.advance()
        if saved is not None:
            persist(engine, saved)
    return fires


def persist(engine: Engine, saved: dict[str, bytes]) -> None:
    for uid in engine.dirty:
        data = engine.dump_user(uid)
        if data is None:
            saved.pop(uid, None)
        else:
            saved[uid] = data
    engine.dirty.clear()


def restored(engine: Engine, saved: dict[str, bytes]) -> Engine:
    """A new engine from only what was persisted (the users marked dirty), as after a crash."""
    fresh = Engine(RULES)
    fresh.load_meta(engine.dump_meta())
    fresh.links = dict(engine.links)
    for uid, data in saved.items():
        fresh.load_user(uid, data)
    for message_id, ts in engine.seen.items():
        fresh.remember(message_id, ts)
    for event in engine.pending_events():
        fresh.force_accept(event)
    return fresh


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**9), n=st.integers(5, 120), cut=st.floats(0, 1))
def test_a_saved_and_loaded_engine_gives_the_same_fires(seed: int, n: int, cut: float) -> None:
    """Persist dirty users after each batch, restore a new engine from that mid-stream: same fires."""
    events = stream(seed, n)
    whole = Engine(RULES)
    expected = run_through(whole, events) + whole.finish()

    split = int(len(events) * cut)
    first = Engine(RULES)
    saved: dict[str, bytes] = {}
    got = run_through(first, events[:split], saved)
    second = restored(first, saved)
    got += run_through(second, events[split:]) + second.finish()
    assert got == expected


def test_state_of_a_changed_trigger_is_dropped_and_of_unchanged_ones_kept() -> None:
    """Reloaded rules keep the state of unchanged triggers only."""
    events = [parse_event(e) for e in stream(3, 60)]
    engine = Engine(RULES)
    engine.ingest(events)
    engine.advance()
    changed = parse_rules(
        RULES_TEXT_CHANGED := """
triggers:
  cart: {when: add, unless: buy, within: 20s, restart: true, key: properties.k, cooldown: 30s,
         description: only the description changed}
  once: {when: add, unless: buy, within: 99s}
"""
    )
    assert "99s" in RULES_TEXT_CHANGED
    fresh = Engine(changed)
    kept = dropped = 0
    for uid in engine.users:
        data = engine.dump_user(uid)
        if data is None:
            continue
        fresh.load_user(uid, data)
        old, new = engine.users[uid], fresh.users[uid]
        kept += old.slots[0] is not None and new.slots[0] is not None
        dropped += old.slots[1] is not None and new.slots[1] is None
        assert new.slots[1] is None
    assert kept and dropped


def test_the_stream_exercises_every_trigger_and_suppression() -> None:
    """Keeps the round-trip test honest: its streams produce fires of each kind."""
    engine = Engine(RULES)
    fires = run_through(engine, stream(5, 300)) + engine.finish()
    outcomes = {(f.trigger, f.suppressed) for f in fires}
    assert {("cart", None), ("cart", "cooldown"), ("once", None), ("binge", None), ("idle", "guard")} <= outcomes
    assert engine.links


def test_traits_from_an_identify_alone_are_persisted() -> None:
    """An identify that concerns no trigger still changes the user: it must be saved."""
    events = [
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "messageId": "i1",
         "timestamp": "2026-03-01T00:00:00.000Z"},
        {"type": "track", "event": "song", "userId": "u2", "messageId": "s1", "timestamp": "2026-03-01T00:01:00.000Z"},
    ]  # fmt: skip
    first = Engine(RULES)
    saved: dict[str, bytes] = {}
    run_through(first, events, saved)
    second = restored(first, saved)
    view = {
        "type": "track",
        "event": "view",
        "userId": "u1",
        "messageId": "v1",
        "timestamp": "2026-03-01T00:02:00.000Z",
    }
    fires = run_through(second, [view]) + second.finish()
    assert [(f.trigger, f.suppressed) for f in fires if f.trigger == "pro"] == [("pro", None)]
