"""The live service on every store adapter: what it writes, a restart recovers, and a replay of
the log it kept gives the fires it recorded (the pipeline's reads and writes, end to end)."""

from __future__ import annotations

from pathlib import Path

from conftest import StoreLocation
from service_kit import Clock, track, wait_for
from tripwire.engine import Fire
from tripwire.replay import Replayer, replay_store
from tripwire.rules import load_rules
from tripwire.server.service import Service
from tripwire.timestamps import format_ms

RULES = """
settings: {allowed_lateness: 10s}
triggers:
  cart: {when: add, unless: buy, within: 300ms}
  three: {when: song, count: 3, within: 1h}
  idle: {inactive: 1h}
"""


async def test_a_restart_recovers_state_dedup_and_timers_and_a_replay_agrees(
    location: StoreLocation, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    clock = Clock(1_772_323_200.0)
    service = Service(rules, tmp_path / "data", clock=clock, store=location.open().store)
    await service.start()
    t0 = service.now_ms()
    # The 10s lateness keeps m3 unapplied (accepted, not yet applied) when the service stops.
    assert await service.submit([
        track("song", "u1", "m1", t0 - 20_000), track("song", "u1", "m2", t0 - 15_000), track("song", "u1", "m3", t0),
        track("add", "u2", "m4", t0 - 12_000), track("add", "u1\x00x", "m5", t0 - 11_000),
    ]) == ["accepted"] * 5  # fmt: skip
    await wait_for(lambda: len(service.fires()) == 2)  # cart of u2 and of u1\x00x, past the watermark already
    await service.stop()

    clock.now += 2 * 3600  # two hours down: the idle timers come due while it is
    again = Service(rules, tmp_path / "data", clock=clock, store=location.open().store)
    await again.start()
    assert await again.submit([track("song", "u1", "m1", t0)]) == ["duplicate"]
    await again.submit([track("song", "u1", "m6", t0 + 1)])
    clock.now += 61  # past restart_grace: the watermark moves on
    await wait_for(lambda: len(again.fires()) == 6)
    recorded = {(f["trigger"], f["user_id"]): (f["fire_time"], f["events"]) for f in again.fires(limit=100)}
    await again.stop()
    assert recorded == {
        ("cart", "u2"): (format_ms(t0 - 12_000 + 300), ["m4"]),
        ("cart", "u1\x00x"): (format_ms(t0 - 11_000 + 300), ["m5"]),
        ("three", "u1"): (format_ms(t0), ["m1", "m2", "m3"]),
        ("idle", "u1"): (format_ms(t0 + 1 + 3_600_000), ["m6"]),
        ("idle", "u2"): (format_ms(t0 - 12_000 + 3_600_000), ["m4"]),
        ("idle", "u1\x00x"): (format_ms(t0 - 11_000 + 3_600_000), ["m5"]),
    }

    store = location.open().store
    replayed: list[Fire] = []
    replay_store(Replayer(load_rules(rules), replayed.append), store, None)
    assert sorted(f.fire_id for f in replayed) == sorted(f.fire_id for f in store.fires(limit=100))
