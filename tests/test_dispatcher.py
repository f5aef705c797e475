"""Delivery end to end through the real service, outbox and webhook channel, to a real receiver."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from receiver import receiver
from tripwire.actions.base import Channel
from tripwire.actions.dispatcher import ChannelFactory, Dispatcher
from tripwire.actions.in_app import Inbox
from tripwire.actions.registry import make_channel
from tripwire.actions.transport import Resolver, system_resolver
from tripwire.actions.webhook import WebhookChannel
from tripwire.events import parse_event
from tripwire.rules import ActionConfig
from tripwire.server.service import Service
from tripwire.store import SqliteOutbox, SqliteStore
from tripwire.store.inbox import SqliteInbox
from tripwire.timestamps import format_ms

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
START = 1_772_366_400.0  # 2026-03-01T12:00:00Z


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rules_text(url: str, settings: str = "", trigger_extra: str = "", action_extra: str = "") -> str:
    return f"""
settings:
  allowed_lateness: 0s
{settings}
actions:
  hook:
    type: webhook
    url: {url}/hooks
    secret: {SECRET}
    allow_private: true
    max_attempts: 3
{action_extra}
triggers:
  buy:
    when: purchase
    actions: [hook]
{trigger_extra}
"""


class Harness:
    def __init__(self, service: Service, dispatcher: Dispatcher, clock: Clock, outbox: SqliteOutbox) -> None:
        self.service = service
        self.dispatcher = dispatcher
        self.clock = clock
        self.outbox = outbox
        self.n = 0

    async def buy(self, user: str, traits: dict[str, Any] | None = None) -> None:
        self.n += 1
        now = self.service.now_ms()
        events = []
        if traits:
            events.append(parse_event({"type": "identify", "userId": user, "traits": traits,
                                       "messageId": f"i{self.n}", "timestamp": format_ms(now)}))  # fmt: skip
        events.append(parse_event({"type": "track", "event": "purchase", "userId": user,
                                   "messageId": f"m{self.n}", "timestamp": format_ms(now)}))  # fmt: skip
        await self.service.submit(events)

    async def until(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)

    def attempts_recorded(self) -> int:
        return sum(len(self.outbox.attempts(d.id)) for d in self.outbox.find())

    def statuses(self) -> list[tuple[str, str | None]]:
        return [(d.status, d.reason) for d in self.outbox.find()]


@asynccontextmanager
async def start(
    tmp_path: Path,
    text: str,
    clock: Clock,
    all_channels: bool = False,
    channel: ChannelFactory | None = None,
    resolver: Resolver = system_resolver,
) -> AsyncIterator[Harness]:
    """The service and a dispatcher over webhooks only, or (`all_channels`) as `serve` builds it, or `channel`."""
    (tmp_path / "rules.yaml").write_text(text)
    service = Service(tmp_path / "rules.yaml", tmp_path / "data", clock=clock, tick=0.02)
    await service.start()
    outbox = SqliteOutbox(tmp_path / "data")
    inbox = Inbox(SqliteInbox(tmp_path / "data"))

    def default(action: ActionConfig, http: httpx.AsyncClient) -> Channel:
        return make_channel(action, http, inbox=inbox) if all_channels else WebhookChannel(action, http)

    dispatcher = Dispatcher(
        SqliteStore(tmp_path / "data"), outbox, lambda: service.rules, channel or default, clock=clock, poll=0.02,
        rng=random.Random(7), resolver=resolver,
    )  # fmt: skip
    task = asyncio.create_task(dispatcher.run())
    loop = asyncio.get_running_loop()
    service.listeners.append(lambda fires: loop.call_soon_threadsafe(dispatcher.wake))
    try:
        yield Harness(service, dispatcher, clock, outbox)
    finally:
        dispatcher.stop()
        await task
        await service.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


async def test_a_fire_reaches_the_receiver_signed_with_its_fire_id(tmp_path: Path, clock: Clock) -> None:
    with receiver() as rx:
        async with start(tmp_path, rules_text(rx.url), clock) as h:
            await h.buy("u1")
            await h.until(lambda: bool(rx.requests))
            await h.until(lambda: h.statuses() == [("delivered", None)])
    request = rx.requests[0]
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert payload["fire"]["trigger"] == "buy" and payload["user"]["id"] == "u1"
    assert request.headers["webhook-id"] == request.headers["idempotency-key"] == payload["fire"]["fire_id"]


async def test_a_failing_receiver_is_retried_with_backoff_until_it_succeeds(tmp_path: Path, clock: Clock) -> None:
    with receiver([(503, {}), (429, {"retry-after": "120"})]) as rx:
        async with start(tmp_path, rules_text(rx.url), clock) as h:
            await h.buy("u1")
            await h.until(lambda: len(rx.requests) == 1)
            await h.until(lambda: h.statuses()[0][0] == "pending" and "retry 2" in (h.statuses()[0][1] or ""))
            clock.now += 2  # first backoff is between 0.5 s and 1 s
            await h.until(lambda: len(rx.requests) == 2)
            await h.until(lambda: "retry 3" in (h.statuses()[0][1] or ""))
            clock.now += 60  # not yet: the receiver asked for 120 s
            await asyncio.sleep(0.2)
            assert len(rx.requests) == 2
            clock.now += 61
            await h.until(lambda: h.statuses() == [("delivered", None)])
    ids = {r.headers["webhook-id"] for r in rx.requests}
    assert len(rx.requests) == 3 and len(ids) == 1
    attempts = h.outbox.attempts(h.outbox.find()[0].id)
    assert [(a.outcome, a.http_status) for a in attempts] == [("retry", 503), ("retry", 429), ("ok", 200)]


async def test_too_many_failures_park_the_delivery_as_dead_and_it_can_be_retried(tmp_path: Path, clock: Clock) -> None:
    with receiver([(500, {})] * 3) as rx:
        async with start(tmp_path, rules_text(rx.url), clock) as h:
            await h.buy("u1")
            for n in (1, 2, 3):
                await h.until(lambda n=n: h.attempts_recorded() == n)  # type: ignore[misc]
                clock.now += 3600  # only once the attempt is recorded, or its retry is scheduled later
            await h.until(lambda: h.statuses()[0][0] == "dead")
            assert "gave up after 3 attempts" in (h.statuses()[0][1] or "")
            assert h.outbox.retry_dead(h.service.now_ms()) == 1
            h.dispatcher.wake()
            await h.until(lambda: h.statuses()[0][0] == "delivered")
    assert len(rx.requests) == 4


async def test_a_permanent_failure_is_dead_at_once(tmp_path: Path, clock: Clock) -> None:
    with receiver([(400, {})]) as rx:
        async with start(tmp_path, rules_text(rx.url), clock) as h:
            await h.buy("u1")
            await h.until(lambda: h.statuses()[0][0] == "dead")
    assert "permanent failure: HTTP 400" in (h.statuses()[0][1] or "")


async def test_a_private_destination_is_refused_unless_allowed(tmp_path: Path, clock: Clock) -> None:
    with receiver() as rx:
        text = rules_text(rx.url).replace("    allow_private: true\n", "")
        async with start(tmp_path, text, clock) as h:
            await h.buy("u1")
            await h.until(lambda: h.statuses()[0][0] == "dead")
    assert rx.requests == []
    assert "private address" in (h.statuses()[0][1] or "")


async def test_the_frequency_cap_drops_deliveries_over_it_and_says_why(tmp_path: Path, clock: Clock) -> None:
    settings = "  frequency_cap: {max: 2, per: 1d}"
    with receiver() as rx:
        async with start(tmp_path, rules_text(rx.url, settings=settings), clock) as h:
            for _ in range(3):
                await h.buy("u1")
                await h.until(lambda: all(s not in {"pending", "sending"} for s, _ in h.statuses()))
                clock.now += 1
            await h.buy("u2")
            await h.until(lambda: len(rx.requests) == 3)
            clock.now += 86_400
            await h.buy("u1")
            await h.until(lambda: len(rx.requests) == 4)
    statuses = sorted(s for s, _ in h.statuses())
    assert statuses == ["delivered"] * 4 + ["dropped"]
    dropped = next(reason for s, reason in h.statuses() if s == "dropped")
    assert dropped == "frequency cap: 2 deliveries to this user in the last 1d"


async def test_quiet_hours_hold_a_delivery_until_they_end_in_the_users_zone(tmp_path: Path, clock: Clock) -> None:
    # 12:00 UTC is 21:00 in Tokyo: inside 20:00-08:00 there, outside in London
    settings = '  quiet_hours: {start: "20:00", end: "08:00", channels: [webhook]}'
    with receiver() as rx:
        async with start(tmp_path, rules_text(rx.url, settings=settings), clock) as h:
            await h.buy("tokyo", {"timezone": "Asia/Tokyo"})
            await h.buy("london", {"timezone": "Europe/London"})
            await h.until(lambda: len(rx.requests) == 1)
            await h.until(lambda: any(s == "pending" and r and "quiet hours" in r for s, r in h.statuses()))
            held = next(r for s, r in h.statuses() if s == "pending")
            assert held == "quiet hours in Asia/Tokyo: held until 2026-03-01T23:00:00.000Z"
            clock.now += 10 * 3600  # 22:00 UTC: 07:00 in Tokyo, still quiet
            await asyncio.sleep(0.2)
            assert len(rx.requests) == 1
            clock.now += 3600
            await h.until(lambda: len(rx.requests) == 2)
    assert json.loads(rx.requests[1].body)["user"]["id"] == "tokyo"


async def test_held_out_users_are_recorded_but_not_delivered(tmp_path: Path, clock: Clock) -> None:
    from tripwire.actions.policies import in_holdout

    users = [f"user{i}" for i in range(40)]
    held = {u for u in users if in_holdout("buy", u, 0.5)}
    assert 5 < len(held) < 35
    with receiver() as rx:
        async with start(tmp_path, rules_text(rx.url, trigger_extra="    holdout: 50%"), clock) as h:
            for user in users:
                await h.buy(user)
            await h.until(lambda: len(rx.requests) == len(users) - len(held))
            await asyncio.sleep(0.1)
            fires = SqliteStore(tmp_path / "data").fires(limit=100)
    assert {json.loads(r.body)["user"]["id"] for r in rx.requests} == set(users) - held
    assert {f.user_id for f in fires if f.holdout} == held
    assert len(rx.requests) == len(users) - len(held)


async def test_slack_airflow_and_n8n_receive_a_fire_sent_to_the_service(tmp_path: Path, clock: Clock) -> None:
    """From an event submitted to the service to the bytes each stand-in receives."""
    with receiver() as rx:
        text = f"""
settings: {{allowed_lateness: 0s}}
actions:
  team: {{type: slack, url: "{rx.url}/slack", text: "{{{{ fire.trigger }}}} by {{{{ user.id }}}}", allow_private: true}}
  dag: {{type: airflow, url: "{rx.url}/airflow", dag_id: winback, username: u, password: p, allow_private: true}}
  flow: {{type: n8n, url: "{rx.url}/webhook/abc", allow_private: true}}
triggers:
  buy: {{when: purchase, actions: [team, dag, flow]}}
"""
        async with start(tmp_path, text, clock, all_channels=True) as h:
            await h.buy("u1")
            await h.until(lambda: sorted(s for s, _ in h.statuses()) == ["delivered"] * 3)
    by_path = {r.path: r for r in rx.requests}
    fire_id = h.outbox.find()[0].fire_id
    assert json.loads(by_path["/slack"].body) == {"text": "buy by u1"}
    dag_run = json.loads(by_path["/airflow/api/v1/dags/winback/dagRuns"].body)
    assert dag_run["dag_run_id"] == f"tripwire-{fire_id}" and dag_run["conf"]["fire"]["user_id"] == "u1"
    assert by_path["/airflow/api/v1/dags/winback/dagRuns"].headers["authorization"].startswith("Basic ")
    assert by_path["/webhook/abc"].headers["idempotency-key"] == fire_id
