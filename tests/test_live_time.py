"""SPEC §2 in a live service: the watermark never runs ahead of the wall clock, future events
wait for their time, and events SDKs send again after a restart are not lost to lateness."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service_kit import Clock, replayed, server_fires, track, wait_for
from tripwire.engine import Fire
from tripwire.server.service import Service

RULES = """
settings: {allowed_lateness: 5s, restart_grace: 30s}
triggers:
  abandon: {when: add, unless: buy, within: 1h}
  big: {when: buy}
"""
HOUR = 3_600_000


async def settle(service: Service) -> None:
    """Let the writer take a few rounds at the current (test) clock."""
    await asyncio.sleep(0.35)


async def test_an_event_stamped_23_hours_ahead_makes_no_other_event_late_and_no_timer_early(tmp_path: Path) -> None:
    """Issue: one such event moved the watermark a day ahead, so a 1h abandonment fired 59
    minutes early and the purchase that should have closed it was late."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    clock = Clock(1_772_323_200.0)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    t0 = service.now_ms()
    seen: list[Fire] = []
    service.listeners.append(seen.extend)
    assert await service.submit([track("buy", "mallory", "evil", t0 + 23 * HOUR)]) == ["accepted"]
    assert await service.submit([track("add", "ada", "a1", t0 + 10)]) == ["accepted"]
    clock.now += 60
    await settle(service)
    assert service.engine.watermark <= service.now_ms() - 5_000
    assert await service.submit([track("buy", "ada", "a2", t0 + 61_000)]) == ["accepted"]
    clock.now += 2 * 3600  # past ada's deadline: her purchase closed the window, nothing fires
    await settle(service)
    assert sorted((f.trigger, f.user_id) for f in seen) == [("big", "ada")]
    assert service.status()["pending_events"] == 1  # mallory's event waits for its time
    clock.now += 22 * 3600
    await wait_for(lambda: any(f.user_id == "mallory" for f in seen))
    mallory = next(f for f in seen if f.user_id == "mallory")
    assert mallory.fire_time == t0 + 23 * HOUR
    await service.stop()
    server = server_fires(tmp_path / "data")
    assert replayed(rules, tmp_path / "data") == server


async def test_a_replay_of_the_log_stops_where_the_server_was_even_with_a_future_event(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    clock = Clock(1_772_323_200.0)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    t0 = service.now_ms()
    await service.submit([track("add", "ada", "a1", t0), track("add", "bob", "b1", t0 + 5 * HOUR)])
    clock.now += 2 * 3600
    await settle(service)
    await service.stop()
    server = server_fires(tmp_path / "data")
    assert len(server) == 1  # ada's abandonment; bob's add lies ahead, so no window of his is open
    assert replayed(rules, tmp_path / "data") == server


async def test_events_sent_again_after_a_restart_are_applied_not_late(tmp_path: Path) -> None:
    """Issue: an SDK's retries after a restart longer than allowed_lateness were all late."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    clock = Clock(1_772_323_200.0)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    t0 = service.now_ms()
    await service.submit([track("add", "ada", "a1", t0)])
    await settle(service)
    await service.stop()

    clock.now += 20  # down for 20 s, four times the allowed lateness; the SDK kept ada's purchase
    again = Service(rules, tmp_path / "data", clock=clock)
    await again.start()
    assert again.status()["holding_watermark"]
    clock.now += 5
    assert await again.submit([track("buy", "ada", "a2", t0 + 2_000)]) == ["accepted"]
    clock.now += 30  # the grace is over: the watermark catches up with the wall clock
    await settle(again)
    assert not again.status()["holding_watermark"]
    assert await again.submit([track("buy", "ada", "a3", t0 + 3_000)]) == ["late"]
    clock.now += 2 * 3600
    await settle(again)
    fires = again.fires()
    await again.stop()
    assert sorted(f["trigger"] for f in fires) == ["big"]  # the purchase closed the window


async def test_a_fresh_data_folder_has_no_grace(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    service = Service(rules, tmp_path / "data")
    await service.start()
    assert not service.status()["holding_watermark"]
    await service.stop()
