"""What the HTTP tests share: a real Service on a tmp data folder, the app over it, and a
uvicorn server on 127.0.0.1 for the tests that need real sockets (the Segment SDK)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from channel_kit import serve
from tripwire.actions.in_app import Inbox
from tripwire.server.app import create_app
from tripwire.server.auth import Secret
from tripwire.server.inbox import inbox_routes
from tripwire.server.logs import json_logger
from tripwire.server.metrics import Metrics
from tripwire.server.service import Service
from tripwire.store import SqliteOutbox
from tripwire.store.goals import SqliteGoals
from tripwire.store.inbox import SqliteInbox
from tripwire.timestamps import parse_ms

WRITE_KEY = "wk_live_0123456789abcdef"
OTHER_WRITE_KEY = "wk_other_fedcba9876543210"
ADMIN_TOKEN = "adm_9f8e7d6c5b4a39281706"
INBOX_SECRET = "inbox_5a4b3c2d1e0f"
T0 = "2026-03-01T12:00:00.000Z"
T0_MS = parse_ms(T0)

RULES = """\
settings: {allowed_lateness: 5s}
triggers:
  big_purchase:
    description: a purchase of 500 or more
    when: {event: purchase, where: {properties.total: {gte: 500}}}
    cooldown: 1h
  cart:
    when: add_to_cart
    unless: purchase
    within: 1h
"""


class Clock:
    """The service clock, moved by hand (seconds, like time.time)."""

    def __init__(self, start_ms: int = T0_MS) -> None:
        self.now = start_ms / 1000

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    """A started service, the app over it, and what the test may look at."""

    service: Service
    app: Starlette
    clock: Clock
    metrics: Metrics
    logs: io.StringIO
    rules_path: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://tripwire.test")

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs.getvalue().splitlines() if line]


def make_service(tmp_path: Path, clock: Clock, rules: str = RULES, **options: Any) -> tuple[Service, Path]:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(rules)
    return Service(rules_path, tmp_path / "data", clock=clock, tick=0.02, **options), rules_path


def make_app(service: Service, metrics: Metrics, logs: io.StringIO, **options: Any) -> Starlette:
    """The app as `tripwire serve` builds it: with the delivery admin routes and the in-app inbox."""
    service.listeners.append(metrics.on_fires)
    keys = [Secret(WRITE_KEY), Secret(OTHER_WRITE_KEY)]
    options.setdefault("delivery", (SqliteOutbox(service.data_dir), SqliteGoals(service.data_dir)))
    inbox = Inbox(SqliteInbox(service.data_dir))
    options.setdefault("extra_routes", inbox_routes(inbox, write_keys=keys, secret=Secret(INBOX_SECRET)))
    return create_app(
        service,
        write_keys=keys,
        admin_token=Secret(ADMIN_TOKEN),
        logger=json_logger(logs, level=10),
        metrics=metrics,
        **options,
    )


@asynccontextmanager
async def harness(tmp_path: Path, *, start: bool = True, **service_options: Any) -> AsyncIterator[Harness]:
    """A real Service on SQLite in `tmp_path`, started (unless `start=False`), and its app."""
    clock = Clock()
    service, rules_path = make_service(tmp_path, clock, **service_options)
    metrics, logs = Metrics(), io.StringIO()
    app = make_app(service, metrics, logs)
    if start:
        await service.start()
    try:
        yield Harness(service, app, clock, metrics, logs, rules_path)
    finally:
        await service.stop()


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def track(event: str = "purchase", user: str = "u1", **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "userId": user, "timestamp": T0, **fields}


async def wait_until(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


@contextmanager
def live_server(service: Service, app: Starlette) -> Iterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port in a thread, as `tripwire serve` does
    (service started before the server, stopped after it); yields the base URL."""

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    with serve(app, running) as url:
        yield url
