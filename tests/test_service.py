"""The live service on a real SQLite store: durability, wall-clock timers, restarts, reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service_kit import Clock, track, wait_for
from tripwire.engine import Fire
from tripwire.replay import Replayer, replay_store
from tripwire.rules import load_rules
from tripwire.server.service import Service
from tripwire.store import SqliteStore
from tripwire.timestamps import format_ms

RULES = """
settings: {allowed_lateness: 0s}
triggers:
  cart: {when: add, unless: buy, within: 300ms}
  big: {when: buy}
  idle: {inactive: 1h}
"""


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


async def test_acknowledged_events_are_in_the_log_with_their_decisions(rules_path: Path, tmp_path: Path) -> None:
    service = Service(rules_path, tmp_path / "data")
    await service.start()
    now = service.now_ms() + 1000  # ahead of the wall-clock watermark (no lateness is allowed)
    decisions = await service.submit([track("buy", "u1", "m1", now), track("buy", "u1", "m1", now)])
    late = await service.submit([track("buy", "u1", "m2", now - 60_000)])
    await service.stop()
    assert decisions == ["accepted", "duplicate"] and late == ["late"]
    store = SqliteStore(tmp_path / "data")
    assert [(r.message_id, r.decision) for r in store.iter_log()] == [
        ("m1", "accepted"), ("m1", "duplicate"), ("m2", "late"),
    ]  # fmt: skip


async def test_an_absence_fires_on_the_wall_clock_within_a_second(rules_path: Path, tmp_path: Path) -> None:
    """§2: the watermark moves with the wall clock, so a window fires with no more traffic."""
    service = Service(rules_path, tmp_path / "data")
    await service.start()
    seen: list[Fire] = []
    service.listeners.append(seen.extend)
    # stamped a little ahead: with no allowed lateness, an event already behind the
    # wall clock when the writer decides it would be late (SPEC §2)
    start = service.now_ms() + 50
    await service.submit([track("add", "u1", "m1", start)])
    await wait_for(lambda: any(f.trigger == "cart" for f in seen))
    emitted = service.now_ms()
    await service.stop()
    fire = next(f for f in seen if f.trigger == "cart")
    assert fire.fire_time == start + 300
    assert emitted - fire.fire_time < 1000


async def test_timers_due_while_down_fire_at_start_with_their_original_time(rules_path: Path, tmp_path: Path) -> None:
    clock = Clock(1_772_323_200.0)
    service = Service(rules_path, tmp_path / "data", clock=clock)
    await service.start()
    t0 = service.now_ms()
    await service.submit([track("add", "u1", "m1", t0), track("view", "u2", "m2", t0)])
    await service.stop()

    clock.now += 2 * 3600  # two hours of downtime
    again = Service(rules_path, tmp_path / "data", clock=clock)
    await again.start()
    # for restart_grace (60s by default) the watermark waits where it was, for SDKs to resend
    await asyncio.sleep(0.3)
    assert again.fires() == [] and again.status()["holding_watermark"]
    clock.now += 61
    await wait_for(lambda: len(again.fires()) == 3)
    fires = {(f["trigger"], f["user_id"]): f["fire_time"] for f in again.fires()}
    await again.stop()
    assert fires == {
        ("cart", "u1"): format_ms(t0 + 300),
        ("idle", "u1"): format_ms(t0 + 3_600_000),
        ("idle", "u2"): format_ms(t0 + 3_600_000),
    }


async def test_a_restart_keeps_state_dedup_memory_and_unapplied_events(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("settings: {allowed_lateness: 10s}\ntriggers:\n  three: {when: song, count: 3, within: 1h}\n")
    clock = Clock(1_772_323_200.0)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    t0 = service.now_ms()
    # the 10s lateness keeps m2 unapplied (pending) when the service stops
    await service.submit([track("song", "u1", "m1", t0 - 20_000), track("song", "u1", "m2", t0)])
    await service.stop()
    again = Service(rules, tmp_path / "data", clock=clock)
    await again.start()
    assert await again.submit([track("song", "u1", "m1", t0)]) == ["duplicate"]
    await again.submit([track("song", "u1", "m3", t0 + 1)])
    clock.now += 30
    await wait_for(lambda: bool(again.fires()))
    fires = again.fires()
    await again.stop()
    assert [f["events"] for f in fires] == [["m1", "m2", "m3"]]


async def test_reload_keeps_state_of_unchanged_triggers(rules_path: Path, tmp_path: Path) -> None:
    clock = Clock(1_772_323_200.0)
    service = Service(rules_path, tmp_path / "data", clock=clock)
    await service.start()
    t0 = service.now_ms()
    await service.submit([track("add", "u1", "m1", t0), track("view", "u1", "m2", t0)])
    rules_path.write_text(RULES.replace("inactive: 1h", "inactive: 2h").replace("big: {when: buy}", "big: {when: x}"))
    reloaded = await service.reload_rules()
    assert reloaded.trigger("big").when is not None
    clock.now += 3 * 3600
    await wait_for(lambda: bool(service.fires()))
    triggers = sorted(f["trigger"] for f in service.fires())
    await service.stop()
    # cart kept its window; idle changed (1h -> 2h), so its old deadline was dropped
    assert triggers == ["cart"]


async def test_a_bad_rules_file_on_reload_changes_nothing(rules_path: Path, tmp_path: Path) -> None:
    from tripwire.errors import RulesError

    service = Service(rules_path, tmp_path / "data")
    await service.start()
    rules_path.write_text("triggers:\n  cart: {when: add, within: 5x}\n")
    with pytest.raises(RulesError) as caught:
        await service.reload_rules()
    assert "5x" in str(caught.value)
    assert [t["id"] for t in service.triggers()] == ["cart", "big", "idle"]
    await service.stop()


async def test_replaying_the_store_gives_the_fires_the_server_gave(rules_path: Path, tmp_path: Path) -> None:
    """§5: same input, same fires."""
    clock = Clock(1_772_323_200.0)
    service = Service(rules_path, tmp_path / "data", clock=clock)
    await service.start()
    t0 = service.now_ms()
    for i in range(40):
        name = ["add", "buy", "view"][i % 3]
        await service.submit([track(name, f"u{i % 4}", f"m{i}", t0 + i * 100)])
        clock.now += 0.1
    clock.now += 10
    await wait_for(lambda: service.status()["timer_backlog"] == 4)
    await service.stop()

    store = SqliteStore(tmp_path / "data")
    server = sorted((f.fire_id, f.suppressed) for f in store.fires(limit=1000))
    replayed: list[Fire] = []
    replay_store(Replayer(load_rules(rules_path), replayed.append), store, None)
    assert sorted((f.fire_id, f.suppressed) for f in replayed) == server
    assert len(server) > 10


def test_a_reload_rewrites_only_the_users_holding_state_of_a_changed_trigger() -> None:
    """With many users, rewriting every state at each reload would stall ingest."""
    from tripwire.engine import Engine
    from tripwire.rules import parse_rules

    old = Engine(
        parse_rules("triggers:\n  cart: {when: add, unless: buy, within: 1h}\n  idle: {inactive: 1d, of: view}\n")
    )
    old.ingest([track("add", "u1", "m1", 1_000), track("view", "u2", "m2", 1_000)])
    old.advance(2_000)
    old.take_changes()  # saved
    new = old.with_rules(
        parse_rules("triggers:\n  cart: {when: add, unless: buy, within: 1h}\n  idle: {inactive: 2d, of: view}\n")
    )
    assert new.take_changes()[0] == {"u2"}
    assert sorted(new.users) == ["u1", "u2"]
    replaying = Engine(old.rules, dedup_window=None, track_dirty=False).with_rules(new.rules)
    replaying.ingest([track("view", "u3", "m3", 3_000)])
    assert replaying.dedup_window is None and replaying.take_changes()[0] == set()  # still a replay's engine
