"""Delivery on every store adapter: the real service and dispatchers, the outbox of each store,
a real receiver. Two dispatchers (as on two machines) share one outbox."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from conftest import StoreLocation
from receiver import receiver
from service_kit import Clock, track, wait_for
from tripwire.actions.dispatcher import Dispatcher
from tripwire.actions.webhook import WebhookChannel
from tripwire.server.service import Service

RULES = """
settings: {allowed_lateness: 0s}
actions:
  hook: {type: webhook, url: "URL/hooks", allow_private: true, max_attempts: 5}
triggers:
  buy: {when: purchase, actions: [hook]}
"""


async def test_two_dispatchers_deliver_every_fire_with_its_fire_id_as_key(
    location: StoreLocation, tmp_path: Path
) -> None:
    clock = Clock(1_772_366_400.0)
    # Every fourth request fails once: retries go through the shared outbox too.
    with receiver([(503, {}) if i % 4 == 0 else (200, {}) for i in range(40)]) as rx:
        (tmp_path / "rules.yaml").write_text(RULES.replace("URL", rx.url))
        stores = location.open()
        service = Service(tmp_path / "rules.yaml", tmp_path / "data", clock=clock, tick=0.02, store=stores.store)
        await service.start()
        dispatchers = []
        for seed in (1, 2):
            own = location.open()  # each dispatcher with its own adapters, as another process would have
            dispatchers.append(Dispatcher(own.store, own.outbox, lambda: service.rules, WebhookChannel, clock=clock,
                                          poll=0.02, rng=random.Random(seed)))  # fmt: skip
        tasks = [asyncio.create_task(d.run()) for d in dispatchers]
        try:
            now = service.now_ms()
            await service.submit([track("purchase", f"u{i}", f"m{i}", now + i) for i in range(30)])
            await wait_for(lambda: len(stores.outbox.find(status="pending")) + len(stores.outbox.find()) > 0)
            for _ in range(20):  # move time past the backoffs until every delivery is delivered
                clock.now += 5
                for d in dispatchers:
                    d.wake()
                await asyncio.sleep(0.1)
                if len(stores.outbox.find(status="delivered", limit=100)) == 30:
                    break
            delivered = stores.outbox.find(status="delivered", limit=100)
        finally:
            for d in dispatchers:
                d.stop()
            await asyncio.gather(*tasks)
            await service.stop()
    assert len(delivered) == 30
    fire_ids = {f.fire_id for f in stores.store.fires(limit=100)}
    keys = [r.headers["idempotency-key"] for r in rx.requests]
    assert set(keys) == fire_ids and len(fire_ids) == 30
    # A request twice is a retry after a 503, with the same key; never a second delivery of a success.
    succeeded = [
        r.headers["idempotency-key"] for r, ok in zip(rx.requests, _answers(len(rx.requests)), strict=True) if ok
    ]
    assert sorted(succeeded) == sorted(fire_ids)
    assert len(rx.requests) == 40  # 30 successes and the 10 scripted 503s, each retried once
    assert sum(len(stores.outbox.attempts(d.id)) for d in delivered) == 40


def _answers(n: int) -> list[bool]:
    return [i % 4 != 0 or i >= 40 for i in range(n)]
