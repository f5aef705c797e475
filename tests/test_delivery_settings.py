"""The delivery settings of docs/actions.md that no other test shows at work, each shown at work.

Through the service and the dispatcher to real receivers on 127.0.0.1: an action's
`concurrency` and `rate_limit`, a frequency cap's `channel`, quiet hours' default
`channels` and `default_timezone`; and the backoff schedule from a table.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from starlette.responses import JSONResponse, Response

from channel_kit import Received, stand_in
from receiver import receiver
from test_dispatcher import START, Clock, rules_text, start
from tripwire.actions.policies import BACKOFF_CAP_MS, backoff_ms

USERS = [f"user{i}" for i in range(6)]


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


def settled(statuses: list[tuple[str, str | None]], count: int) -> bool:
    return len(statuses) == count and all(s not in ("pending", "sending") for s, _ in statuses)


async def test_concurrency_caps_the_deliveries_of_an_action_in_flight(tmp_path: Path, clock: Clock) -> None:
    in_flight, most = 0, 0

    async def slow(_request: Received) -> Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.3)
        in_flight -= 1
        return JSONResponse({})

    extra = "    concurrency: 2\n    description: at most two at once\n"
    with stand_in(slow) as rx:
        async with start(tmp_path, rules_text(rx.url, action_extra=extra), clock) as h:
            for user in USERS:  # one user each: deliveries to one user go one at a time anyway
                await h.buy(user)
            await h.until(lambda: h.statuses() == [("delivered", None)] * len(USERS))
    assert len(rx.requests) == len(USERS)
    assert most == 2


async def test_rate_limit_spaces_the_sends_of_an_action(tmp_path: Path, clock: Clock) -> None:
    arrivals: list[float] = []

    def record(_request: Received) -> Response:
        arrivals.append(time.monotonic())
        return JSONResponse({})

    extra = "    rate_limit: {max: 3, per: 1s}\n"
    with stand_in(record) as rx:
        async with start(tmp_path, rules_text(rx.url, action_extra=extra), clock) as h:
            for user in USERS:
                await h.buy(user)
            await h.until(lambda: h.statuses() == [("delivered", None)] * len(USERS))
    assert len(rx.requests) == len(USERS)
    first = arrivals[0]
    assert arrivals[2] - first < 0.3  # a full bucket: three at once
    # then one a third of a second: the 4th after ~1/3 s, the 6th after ~1 s
    assert arrivals[3] - first >= 0.25 and arrivals[5] - first >= 0.9


async def test_a_frequency_cap_on_a_channel_counts_and_drops_only_that_channel(tmp_path: Path, clock: Clock) -> None:
    with receiver() as rx:
        text = f"""
settings:
  allowed_lateness: 0s
  frequency_cap: {{max: 1, per: 1d, channel: slack}}
actions:
  hook: {{type: webhook, url: "{rx.url}/hooks", allow_private: true}}
  team: {{type: slack, url: "{rx.url}/slack", text: "bought", allow_private: true}}
triggers:
  buy: {{when: purchase, actions: [hook, team]}}
"""
        async with start(tmp_path, text, clock, all_channels=True) as h:
            await h.buy("u1")
            await h.until(lambda: settled(h.statuses(), 2))
            clock.now += 60
            await h.buy("u1")
            await h.until(lambda: settled(h.statuses(), 4))
            outcome = sorted((d.action, d.status, d.reason) for d in h.outbox.find())
    assert outcome == [
        ("hook", "delivered", None),
        ("hook", "delivered", None),
        ("team", "delivered", None),
        ("team", "dropped", "frequency cap: 1 deliveries on slack to this user in the last 1d"),
    ]
    assert sorted(r.path for r in rx.requests) == ["/hooks", "/hooks", "/slack"]


async def test_quiet_hours_hold_only_their_channels_in_the_default_timezone(tmp_path: Path, clock: Clock) -> None:
    # 12:00 UTC is 21:00 in Tokyo: inside 20:00-08:00 for a user without a timezone trait
    default_channels = '  quiet_hours: {start: "20:00", end: "08:00", default_timezone: Asia/Tokyo}'
    webhooks_too = '  quiet_hours: {start: "20:00", end: "08:00", channels: [webhook], default_timezone: Asia/Tokyo}'
    (tmp_path / "email_and_push").mkdir()
    (tmp_path / "webhook").mkdir()
    with receiver() as rx:
        async with start(tmp_path / "email_and_push", rules_text(rx.url, settings=default_channels), clock) as h:
            await h.buy("u1")  # a webhook is not held by default: quiet hours are for email and push
            await h.until(lambda: h.statuses() == [("delivered", None)])
        async with start(tmp_path / "webhook", rules_text(rx.url, settings=webhooks_too), clock) as h:
            await h.buy("u1")
            await h.until(lambda: bool(h.statuses()) and (h.statuses()[0][1] or "").startswith("quiet hours"))
            assert h.statuses() == [("pending", "quiet hours in Asia/Tokyo: held until 2026-03-01T23:00:00.000Z")]
            clock.now += 11 * 3600  # 23:00 UTC, 08:00 in Tokyo
            await h.until(lambda: h.statuses() == [("delivered", None)])
    assert len(rx.requests) == 2


@pytest.mark.parametrize(
    ("attempt", "jitter", "retry_after", "delay"),
    [
        (1, 0.0, None, 500),  # from 1 s, half of it jittered
        (1, 0.999, None, 999),
        (2, 0.0, None, 1_000),
        (3, 0.5, None, 3_000),
        (13, 0.0, None, BACKOFF_CAP_MS // 2),  # 1 s * 2**12 is past the cap of 1 h
        (40, 0.999, None, int(BACKOFF_CAP_MS * 0.9995)),
        (1, 0.0, 120.0, 120_000),  # a longer Retry-After wins
        (3, 0.0, 0.1, 2_000),  # a shorter one does not
    ],
)
def test_retries_back_off_exponentially_to_the_cap_and_honour_retry_after(
    attempt: int, jitter: float, retry_after: float | None, delay: int
) -> None:
    assert backoff_ms(attempt, jitter, retry_after) == delay
