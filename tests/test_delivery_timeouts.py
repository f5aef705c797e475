"""An action's `timeout` is how long one attempt may take, above httpx's 5 s default and below it.

Real slow receivers on 127.0.0.1, through the service and the dispatcher: an answer in
6 s is delivered with `timeout: 30s` (it went dead under the old 5 s client default), an
answer in 3 s with `timeout: 1s` is a failed attempt that says so, and a receiver that
trickles its answer cannot stretch an attempt past its timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.responses import JSONResponse, Response, StreamingResponse

from channel_kit import Received, stand_in
from test_dispatcher import START, Clock, start

SLOW_ANSWERS = {"/six": 6.0, "/three": 3.0}


async def slow(request: Received) -> Response:
    if request.path == "/trickle":

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):  # 8 pieces 0.4 s apart: no single read waits long, the whole takes 3.2 s
                await asyncio.sleep(0.4)
                yield b" "

        return StreamingResponse(chunks(), media_type="application/json")
    await asyncio.sleep(SLOW_ANSWERS[request.path])
    return JSONResponse({"ok": True})


def rules(url: str) -> str:
    return f"""
settings: {{allowed_lateness: 0s}}
actions:
  patient: {{type: webhook, url: "{url}/six", timeout: 30s, allow_private: true}}
  hasty: {{type: webhook, url: "{url}/three", timeout: 1s, max_attempts: 1, allow_private: true}}
  trickled: {{type: webhook, url: "{url}/trickle", timeout: 1500ms, max_attempts: 1, allow_private: true}}
triggers:  # one user each: deliveries to one user go one at a time, these run side by side
  slow: {{when: {{event: purchase, where: {{userId: a}}}}, actions: [patient]}}
  slower: {{when: {{event: purchase, where: {{userId: b}}}}, actions: [hasty]}}
  trickle: {{when: {{event: purchase, where: {{userId: c}}}}, actions: [trickled]}}
"""


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


async def test_each_action_waits_exactly_as_long_as_its_timeout(tmp_path: Path, clock: Clock) -> None:
    with stand_in(slow) as receiver:
        async with start(tmp_path, rules(receiver.url), clock) as h:
            started = time.monotonic()
            for user in "abc":
                await h.buy(user)
            await h.until(lambda: len(h.statuses()) == 3 and all(s in ("delivered", "dead") for s, _ in h.statuses()))
            took = time.monotonic() - started
            by_action = {d.action: d for d in h.outbox.find()}
            attempts = {name: h.outbox.attempts(d.id) for name, d in by_action.items()}
    assert by_action["patient"].status == "delivered"
    [patient] = attempts["patient"]
    assert patient.outcome == "ok" and patient.latency_ms >= 5_900

    assert by_action["hasty"].status == "dead"
    [hasty] = attempts["hasty"]
    assert hasty.outcome == "failed" and 900 <= hasty.latency_ms < 2_500
    assert (hasty.error or "").startswith("timed out after 1s")
    assert "raise it if the receiver is this slow" in (hasty.error or "")

    # the timeout bounds the whole attempt, not each read of it
    [trickled] = attempts["trickled"]
    assert trickled.outcome == "failed" and 1_400 <= trickled.latency_ms < 2_800
    assert (trickled.error or "").startswith("timed out after 1.5s")
    assert took < 9  # side by side, each as long as its own timeout or answer


def test_an_email_action_may_take_its_smtp_timeout_unless_it_sets_its_own() -> None:
    from channel_kit import action

    smtp = "smtp: {host: mail.example.com, timeout: 45s}, from: a@example.com, subject: s, text: t"
    assert action(f"  mail: {{type: email, {smtp}}}\n", "mail").timeout == 45_000
    assert action(f"  mail: {{type: email, {smtp}, timeout: 5s}}\n", "mail").timeout == 5_000
    plain = "smtp: {host: mail.example.com}, from: a@example.com, subject: s, text: t"
    assert action(f"  mail: {{type: email, {plain}}}\n", "mail").timeout == 30_000
    assert action("  hook: {type: webhook, url: 'https://h.example.com'}\n", "hook").timeout == 10_000
