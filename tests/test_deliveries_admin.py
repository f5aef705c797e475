"""What a user of the admin API and the CLI sees of deliveries: attempts, dead letters,
retries, holdouts, conversions and lift; and the delivery metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

from receiver import receiver
from test_dispatcher import Clock, Harness, rules_text, start
from tripwire.actions.goals import sweep
from tripwire.events import parse_event
from tripwire.server.app import create_app
from tripwire.server.auth import Secret
from tripwire.server.metrics import Metrics
from tripwire.store import SqliteOutbox
from tripwire.store.goals import SqliteGoals
from tripwire.timestamps import format_ms

ADMIN = {"Authorization": "Bearer adm"}


def client(h: Harness, tmp_path: Path, metrics: Metrics | None = None) -> httpx.AsyncClient:
    data = tmp_path / "data"
    app = create_app(
        h.service,
        write_keys=[Secret("wk")],
        admin_token=Secret("adm"),
        metrics=metrics or Metrics(),
        delivery=(SqliteOutbox(data), SqliteGoals(data)),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tripwire")


async def test_a_dead_delivery_shows_its_attempts_and_can_be_retried(tmp_path: Path) -> None:
    clock = Clock(1_772_366_400.0)
    metrics = Metrics()
    with receiver([(500, {}), (502, {}), (503, {})]) as rx:
        async with start(tmp_path, rules_text(rx.url), clock) as h:
            h.dispatcher.listeners.append(metrics.on_delivery)
            await h.buy("u1")
            for n in (1, 2, 3):
                await h.until(lambda n=n: h.attempts_recorded() == n)  # type: ignore[misc]
                clock.now += 3600  # only once the attempt is recorded, or its retry is scheduled later
            await h.until(lambda: h.statuses()[0][0] == "dead")
            async with client(h, tmp_path, metrics) as api:
                dead = (await api.get("/api/deliveries?status=dead", headers=ADMIN)).json()["deliveries"]
                assert [(d["action"], d["user_id"]) for d in dead] == [("hook", "u1")]
                assert dead[0]["reason"].startswith("gave up after 3 attempts: HTTP 503")
                one = (await api.get(f"/api/deliveries/{dead[0]['id']}", headers=ADMIN)).json()
                assert [(a["attempt"], a["outcome"], a["http_status"]) for a in one["attempts"]] == [
                    (1, "retry", 500),
                    (2, "retry", 502),
                    (3, "failed", 503),
                ]
                assert (await api.get("/api/deliveries/999", headers=ADMIN)).status_code == 404
                assert (await api.post("/api/deliveries/retry", json={}, headers=ADMIN)).status_code == 400
                retried = await api.post("/api/deliveries/retry", json={"ids": [dead[0]["id"]]}, headers=ADMIN)
                assert retried.json() == {"retried": 1}
                h.dispatcher.wake()
                await h.until(lambda: h.statuses()[0][0] == "delivered")
                stats = (await api.get("/api/stats", headers=ADMIN)).json()["actions"]["hook"]
                assert (stats["attempts"], stats["successes"], stats["failures"]) == (4, 1, 3)
                user = (await api.get("/api/users/u1", headers=ADMIN)).json()
                assert [(d["action"], d["status"]) for d in user["deliveries"]] == [("hook", "delivered")]
                text = (await api.get("/metrics")).text
    assert 'tripwire_delivery_attempts_total{action="hook",outcome="retry"} 2.0' in text
    assert 'tripwire_delivery_attempts_total{action="hook",outcome="ok"} 1.0' in text
    assert 'tripwire_deliveries{action="hook",status="delivered"} 1.0' in text


async def test_conversions_are_counted_for_treated_and_held_out_users(tmp_path: Path) -> None:
    clock = Clock(1_772_366_400.0)
    extra = "    holdout: 50%\n    goal: {event: upgrade, within: 1h}"
    with receiver() as rx:
        async with start(tmp_path, rules_text(rx.url, trigger_extra=extra), clock) as h:
            users = [f"user{i}" for i in range(20)]
            for user in users:
                await h.buy(user)
            clock.now += 60
            later = format_ms(h.service.now_ms())
            # every third user upgrades within the hour; user0 only after it
            upgrades = [
                parse_event(
                    {"type": "track", "event": "upgrade", "userId": u, "messageId": f"up-{u}", "timestamp": later}
                )
                for u in users[1::3]
            ]
            await h.service.submit(upgrades)
            clock.now += 7200
            await h.service.submit(
                [
                    parse_event(
                        {
                            "type": "track",
                            "event": "upgrade",
                            "userId": "user0",
                            "messageId": "up-late",
                            "timestamp": format_ms(h.service.now_ms()),
                        }
                    )
                ]
            )
            await asyncio.sleep(0.2)
            goals = SqliteGoals(tmp_path / "data")
            found = sweep(goals, h.service.rules, h.service.now_ms())
            assert sweep(goals, h.service.rules, h.service.now_ms()) == 0  # idempotent
            async with client(h, tmp_path) as api:
                stats = (await api.get("/api/stats", headers=ADMIN)).json()["triggers"]["buy"]
    assert found == len(users[1::3])
    assert stats["fires"] + stats["holdout"] == len(users)
    assert stats["conversions"] + stats["holdout_conversions"] == found
    assert stats["holdout"] > 0 and stats["fires"] > 0
    expected_lift = stats["conversions"] / stats["fires"] - stats["holdout_conversions"] / stats["holdout"]
    assert abs(stats["lift"] - expected_lift) < 1e-9


async def test_the_deliveries_command_lists_dead_ones_and_retries_them(tmp_path: Path) -> None:
    clock = Clock(time.time())  # the command queues the retry at the wall clock's now
    with receiver([(400, {})]) as rx:
        async with start(tmp_path, rules_text(rx.url), clock) as h:
            await h.buy("u1")
            await h.until(lambda: h.statuses()[0][0] == "dead")
            data = str(tmp_path / "data")
            listed = subprocess.run(
                [sys.executable, "-m", "tripwire", "deliveries", "--data", data, "--dead"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
                env={"COLUMNS": "200"},
            )
            assert "hook" in listed.stdout and "permanent failure: HTTP 400" in listed.stdout
            bare = subprocess.run(
                [sys.executable, "-m", "tripwire", "deliveries", "--data", data, "retry"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert bare.returncode == 2 and "--all" in bare.stderr
            retried = subprocess.run(
                [sys.executable, "-m", "tripwire", "deliveries", "--data", data, "retry", "--all"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert retried.stdout.strip() == "1 dead delivery queued again"
            clock.now = time.time() + 1
            h.dispatcher.wake()
            await h.until(lambda: h.statuses()[0][0] == "delivered")
