"""What the in-process service tests share: a clock moved by hand, a track event, waiting for
the writer, and the fires of a server next to those of a replay of its log."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tripwire.engine import Fire
from tripwire.events import Event, parse_event
from tripwire.replay import Replayer, replay_store
from tripwire.rules import load_rules
from tripwire.store import SqliteStore
from tripwire.timestamps import format_ms


class Clock:
    """The service clock, in seconds like time.time, moved by hand."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def track(name: str, user: str, mid: str, at_ms: int) -> Event:
    return parse_event(
        {"type": "track", "event": name, "userId": user, "messageId": mid, "timestamp": format_ms(at_ms)}
    )


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def server_fires(data: Path) -> list[tuple[str, str | None]]:
    """(fire_id, suppressed) of every fire the server recorded, sorted."""
    return sorted((f.fire_id, f.suppressed) for f in SqliteStore(data).fires(limit=10_000))


def replayed(rules: Path, data: Path) -> list[tuple[str, str | None]]:
    """(fire_id, suppressed) of every fire of a replay of the server's log, sorted."""
    fires: list[Fire] = []
    replay_store(Replayer(load_rules(rules), fires.append), SqliteStore(data), None)
    return sorted((f.fire_id, f.suppressed) for f in fires)
