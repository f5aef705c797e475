"""Fault isolation in the writer: an event that cannot be applied or saved is quarantined with
its reason and the rest commit; a store that fails says so (`/readyz`) and recovers.

The poison events here are made directly as `Event` values, past the ingest's limits, since
those limits exist to refuse them: these tests are about the next poison nobody foresaw.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from http_harness import ADMIN, Harness, harness, make_app
from service_kit import Clock, replayed, server_fires, track, wait_for
from tripwire.errors import AlreadyRetriedError, NotRetryableError, StoreUnavailableError
from tripwire.events import Event, parse_event
from tripwire.pipeline import Pipeline
from tripwire.server.metrics import Metrics
from tripwire.server.service import Service
from tripwire.store import SqliteStore
from tripwire.store.sqlite import SqliteBatch
from tripwire.timestamps import format_ms

RULES = """
settings: {allowed_lateness: 1s, restart_grace: 0s}
triggers:
  big: {when: buy}
  vip: {when: buy, if: [{trait: plan, eq: pro}]}
"""
T0 = 1_772_323_200_000


def identify(user: str, mid: str, at_ms: int, traits: dict[str, Any]) -> Event:
    """An identify as the engine sees it, whatever its traits hold."""
    raw = {"type": "identify", "userId": user, "messageId": mid, "timestamp": format_ms(at_ms), "traits": traits}
    return Event("identify", None, user, None, mid, at_ms, raw)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


async def test_a_trait_that_cannot_be_saved_is_quarantined_and_the_rest_commit(rules: Path, tmp_path: Path) -> None:
    """Issue: one identify with 2**64 in its traits stopped ingest for good, across restarts."""
    clock = Clock(T0 / 1000)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    poison = identify("p", "bad", T0, {"n": 2**64, "plan": "pro"})
    decisions = await service.submit([track("buy", "u1", "g1", T0), poison, track("buy", "p", "g2", T0 + 1)])
    # accepted at first: the poison waits for the watermark like any event, and fails when applied
    assert decisions == ["accepted", "accepted", "accepted"]
    clock.now += 5
    await wait_for(lambda: len(service.fires()) == 4)
    assert service.ready()
    assert sorted((f["trigger"], f["user_id"], f["suppressed"]) for f in service.fires()) == [
        ("big", "p", None), ("big", "u1", None), ("vip", "p", "guard"), ("vip", "u1", "guard"),
    ]  # fmt: skip  # p's pro plan was never applied
    [kept] = service.quarantined()
    assert kept["message_id"] == "bad" and kept["user_id"] == "p"
    assert "OverflowError" in kept["reason"] and kept["event"]["traits"]["n"] == 2**64
    assert service.status()["quarantined"] == 1
    # later events are taken as usual, and a resend of the poison is a duplicate
    assert await service.submit([poison, track("buy", "u2", "g3", T0 + 6_000)]) == ["duplicate", "accepted"]
    await service.stop()

    log = [row.decision for row in SqliteStore(tmp_path / "data").iter_log() if row.message_id == "bad"]
    assert log == ["quarantined", "duplicate"]
    again = Service(rules, tmp_path / "data", clock=clock)
    await again.start()  # the quarantined event is not queued again at recovery
    clock.now += 10
    await wait_for(lambda: len(again.fires()) == 6)
    assert again.ready()
    await again.stop()
    server = server_fires(tmp_path / "data")
    assert replayed(rules, tmp_path / "data") == server


async def test_a_poison_event_arriving_with_due_events_is_found_among_them(rules: Path, tmp_path: Path) -> None:
    clock = Clock(T0 / 1000)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    # stamped behind the wall clock's watermark minus nothing: applied in the round it arrives
    clock.now += 5
    batch = [track("buy", f"u{i}", f"g{i}", T0 + 4_000) for i in range(6)]
    batch.insert(3, identify("p", "bad", T0 + 4_000, {"n": -(2**70)}))
    assert (await service.submit(batch))[3] in ("accepted", "quarantined")
    clock.now += 5
    await wait_for(lambda: len(service.fires()) == 12)
    assert [q["message_id"] for q in service.quarantined()] == ["bad"]
    await service.stop()


async def test_a_poison_the_probe_misses_is_found_by_bisecting_the_round(
    rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe applies each event alone; a fault that shows only within the whole round is
    found by halving it (here the probe is made blind to force that path)."""
    monkeypatch.setattr(Pipeline, "_probe", lambda self, live, event, now: None)
    clock = Clock(T0 / 1000)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    clock.now += 5
    batch = [track("buy", f"u{i}", f"g{i}", T0 + 4_500) for i in range(9)]
    batch.insert(6, identify("p", "bad", T0 + 4_500, {"n": 2**64}))
    await service.submit(batch)
    clock.now += 5
    await wait_for(lambda: len(service.fires()) == 18)
    assert [q["message_id"] for q in service.quarantined()] == ["bad"]
    assert service.ready()
    await service.stop()


async def test_a_quarantined_event_can_be_sent_through_again_after_a_fix(
    rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (here: logging p's event fails) quarantines it; once fixed, a retry takes it as a
    new arrival: accepted while its time is still ahead of the watermark, late after that."""
    real = SqliteBatch.append_events

    def broken(self: SqliteBatch, rows: list[Any]) -> None:
        if any(row.user_id == "p" and row.decision == "accepted" for row in rows):
            raise RuntimeError("a bug in logging p")
        real(self, rows)

    monkeypatch.setattr(SqliteBatch, "append_events", broken)
    clock = Clock(T0 / 1000)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    decisions = await service.submit([track("buy", "p", "p1", T0 + 60_000), track("buy", "u1", "g1", T0)])
    assert decisions == ["quarantined", "accepted"]
    [kept] = service.quarantined()
    assert kept["message_id"] == "p1" and "a bug in logging p" in kept["reason"]

    monkeypatch.setattr(SqliteBatch, "append_events", real)  # the fix
    [outcome] = await service.retry_quarantined(None)
    assert outcome == {"id": kept["id"], "message_id": "p1", "decision": "accepted"}
    clock.now += 120
    await wait_for(lambda: any(f["user_id"] == "p" for f in service.fires()))
    assert service.quarantined()[0]["retry_decision"] == "accepted"
    assert await service.retry_quarantined(None) == []  # nothing left to retry
    with pytest.raises(AlreadyRetriedError):  # a second retry of one entry would apply it twice
        await service.retry_quarantined(kept["id"])
    await service.stop()
    log = [row.decision for row in SqliteStore(tmp_path / "data").iter_log() if row.message_id == "p1"]
    assert log == ["quarantined", "accepted"]


async def test_while_the_store_cannot_write_the_service_is_not_ready_and_then_recovers(
    rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure no event explains (a full disk, a broken file) quarantines nothing: events
    are refused with 503 (nothing acknowledged is lost) until writes work again."""
    clock = Clock(T0 / 1000)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    real = SqliteBatch.save_meta

    def full_disk(self: SqliteBatch, meta: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SqliteBatch, "save_meta", full_disk)
    with pytest.raises(StoreUnavailableError):
        await service.submit([track("buy", "u1", "g1", T0 + 100)])
    for _ in range(10):  # not ready for as long as writes fail, not only until the next read works
        assert not service.ready()
        await asyncio.sleep(0.1)
    with pytest.raises(StoreUnavailableError):
        await service.submit([track("buy", "u1", "g1", T0 + 100)])
    with pytest.raises(StoreUnavailableError):  # a command never runs on an engine ahead of the store
        await service.retry_quarantined(None)
    monkeypatch.setattr(SqliteBatch, "save_meta", real)
    await wait_for(service.ready)
    assert await service.submit([track("buy", "u1", "g1", T0 + 100)]) == ["accepted"]
    assert service.quarantined() == []
    await service.stop()


async def test_the_admin_api_shows_and_retries_the_quarantine_and_metrics_count_it(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await _quarantine_one(h)
        async with h.client() as client:
            listing = (await client.get("/api/quarantine", headers=ADMIN)).json()
            assert listing["total"] == 1 and listing["not_retried"] == 1
            [entry] = listing["events"]
            assert entry["message_id"] == "bad" and "OverflowError" in entry["reason"]
            bad = await client.post("/api/quarantine/retry", json={"id": "x"}, headers=ADMIN)
            assert bad.status_code == 400 and "quarantine id" in bad.json()["message"]
            missing = await client.post("/api/quarantine/retry", json={"id": 999}, headers=ADMIN)
            assert missing.status_code == 404
            retried = await client.post("/api/quarantine/retry", json={"id": entry["id"]}, headers=ADMIN)
            assert retried.status_code == 200
            assert retried.json()["retried"][0]["decision"] in ("quarantined", "late")
            again = await client.post("/api/quarantine/retry", json={"id": entry["id"]}, headers=ADMIN)
            assert again.status_code == 409 and again.json()["code"] == "already_retried"
            metrics = (await client.get("/metrics")).text
            unauthorized = await client.get("/api/quarantine")
        assert unauthorized.status_code == 401
        assert 'tripwire_quarantined_events{state="total"}' in metrics
        assert "tripwire_store_writable 1.0" in metrics


async def _quarantine_one(h: Harness) -> None:
    now = h.service.now_ms()
    await h.service.submit([identify("p", "bad", now, {"n": 2**64})])
    h.clock.advance(10)
    deadline = time.monotonic() + 5
    while not h.service.quarantined():
        assert time.monotonic() < deadline, "nothing was quarantined"
        await asyncio.sleep(0.02)


async def test_a_logged_event_that_can_no_longer_be_read_is_quarantined_at_start(rules: Path, tmp_path: Path) -> None:
    """A start must not fail on one logged event (say, one a newer limit refuses)."""
    clock = Clock(T0 / 1000)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    await service.submit([track("buy", "u1", "g1", T0 + 60_000), track("buy", "u2", "g2", T0 + 60_000)])
    await service.stop()
    store = SqliteStore(tmp_path / "data")
    store.open()
    conn = store._writer
    assert conn is not None
    conn.execute("UPDATE events SET body = ? WHERE message_id = 'g1'", (b'{"type": "track", "event": 5}',))
    store.close()

    again = Service(rules, tmp_path / "data", clock=clock)
    await again.start()
    [kept] = again.quarantined()
    assert kept["message_id"] == "g1" and "cannot be read back from the log" in kept["reason"]
    clock.now += 70
    await wait_for(lambda: len(again.fires()) == 2)
    assert {f["user_id"] for f in again.fires()} == {"u2"}
    await again.stop()


async def test_a_messageid_used_again_after_the_dedup_window_leaves_the_first_event_as_it_was(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("restart_grace: 0s", "restart_grace: 0s, dedup_window: 1s"))
    clock = Clock(T0 / 1000)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    await service.submit([track("buy", "u1", "m1", T0)])
    clock.now += 10  # applied, and m1 forgotten after the dedup window
    await wait_for(lambda: len(service.fires()) == 2)
    assert await service.submit([identify("u1", "m1", T0 + 10_000, {"n": 2**64})]) == ["accepted"]
    clock.now += 5
    await wait_for(lambda: bool(service.quarantined()))
    await service.stop()
    log = [row.decision for row in SqliteStore(tmp_path / "data").iter_log() if row.message_id == "m1"]
    assert log == ["accepted", "quarantined"]
    server = server_fires(tmp_path / "data")
    assert replayed(rules, tmp_path / "data") == server


@pytest.mark.parametrize("applied", ["in the round the timer comes due", "in an earlier round"])
async def test_a_timer_whose_fire_cannot_be_written_is_set_aside_and_a_replay_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, applied: str
) -> None:
    """A fault no arriving event explains, only a timer coming due (here: writing p's reminder
    fails), must not stop tripwire: p's due timers are set aside in the quarantine, everyone
    else's fire, and a replay of the log cancels them where the server did."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("triggers:", "triggers:\n  abandon: {when: add, unless: buy, within: 2s}"))
    real = SqliteBatch.add_fires

    def broken(self: SqliteBatch, fires: list[Any]) -> None:
        if any(f.user_id in ("p", "q") and f.trigger == "abandon" for f in fires):
            raise RuntimeError("a bug in writing p's reminder")
        real(self, fires)

    monkeypatch.setattr(SqliteBatch, "add_fires", broken)
    clock = Clock(T0 / 1000)
    service = Service(rules, tmp_path / "data", clock=clock)
    await service.start()
    anonymous_add = {
        "type": "track",
        "event": "add",
        "anonymousId": "anon",
        "messageId": "a5",
        "timestamp": format_ms(T0),
    }
    carts = [track("add", "p", "a1", T0), track("add", "u1", "a2", T0), track("add", "u2", "a3", T0)]
    await service.submit([*carts, parse_event(anonymous_add)])
    if applied == "in an earlier round":
        clock.now += 1.5  # the carts are applied (watermark T0 + 0.5s), their windows still open
        await wait_for(lambda: service.engine.pending_count() == 0)
        await asyncio.sleep(0.1)
        assert service.engine.timer_count() == 4  # open, not due yet
    clock.now += 5  # the carts' windows ended at T0 + 2s
    # In the round they come due: p's innocent buy after the deadline (not at fault: it is
    # accepted and fires), and q's identify of anon before the deadline, which moves anon's
    # window under q: its timer is set aside under q as well.
    q_identify = {"type": "identify", "userId": "q", "anonymousId": "anon", "messageId": "i1",
                  "timestamp": format_ms(T0 + 1_000)}  # fmt: skip
    assert await service.submit([track("buy", "p", "b1", T0 + 3_000), parse_event(q_identify)]) == ["accepted"] * 2
    await wait_for(lambda: len([f for f in service.fires() if f["trigger"] == "abandon"]) == 2)
    assert service.ready()
    assert sorted(f["user_id"] for f in service.fires() if f["trigger"] == "abandon") == ["u1", "u2"]
    assert ("big", "p") in {(f["trigger"], f["user_id"]) for f in service.fires()}
    assert service.status()["quarantined"] == 2
    kept, merged = sorted(service.quarantined(), key=lambda q: q["user_id"])
    assert merged["kind"] == "timers" and merged["user_id"] == "q" and merged["timers"][0]["events"] == ["a5"]
    assert kept["kind"] == "timers" and kept["user_id"] == "p"
    assert "a bug in writing p's reminder" in kept["reason"]
    assert [(t["trigger"], t["events"]) for t in kept["timers"]] == [("abandon", ["a1"])]
    with pytest.raises(NotRetryableError):
        await service.retry_quarantined(kept["id"])
    app = make_app(service, Metrics(), io.StringIO())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tripwire.test") as client:
        listed = (await client.get("/api/quarantine", headers=ADMIN)).json()["events"]
        refused = await client.post("/api/quarantine/retry", json={"id": kept["id"]}, headers=ADMIN)
    assert [entry["kind"] for entry in listed] == ["timers", "timers"]
    assert refused.status_code == 409 and refused.json()["code"] == "not_retryable"
    assert await service.retry_quarantined(None) == []  # "all" means the events, not the timers
    assert service.quarantine_counts() == (2, 0)  # recorded as not retryable: none waits for a retry
    assert kept["retry_decision"] == "not_retryable"

    monkeypatch.setattr(SqliteBatch, "add_fires", real)  # the fix: p's next cart fires as usual
    await service.submit([track("add", "p", "a4", service.now_ms())])
    clock.now += 5
    await wait_for(lambda: any(f["user_id"] == "p" and f["trigger"] == "abandon" for f in service.fires()))
    await service.stop()
    assert [row.decision for row in SqliteStore(tmp_path / "data").iter_log() if row.user_id == "p"] == [
        "accepted", "accepted", "timers_quarantined", "accepted",
    ]  # fmt: skip
    server = server_fires(tmp_path / "data")
    assert replayed(rules, tmp_path / "data") == server
    again = Service(rules, tmp_path / "data", clock=clock)
    await again.start()  # the set-aside timer does not come back at recovery
    clock.now += 5
    await asyncio.sleep(0.2)
    await again.stop()
    assert server_fires(tmp_path / "data") == server
