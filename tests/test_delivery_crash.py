"""A crash between a send and its record: the delivery is sent again after restart, with
the same idempotency key, and never a third time; the fire itself is recorded once."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from receiver import receiver
from test_example_e2e import Lines, free_port
from tripwire.store import SqliteOutbox, SqliteStore

RULES = """
settings: {allowed_lateness: 1s}
actions:
  hook: {type: webhook, url: "URL/hooks", allow_private: true}
triggers:
  buy: {when: purchase, actions: [hook]}
"""


def start_server(rules: Path, data: Path, port: int) -> Lines:
    env = {**os.environ, "TRIPWIRE_WRITE_KEYS": "wk", "TRIPWIRE_ADMIN_TOKEN": "adm"}
    server = Lines(
        [sys.executable, "-m", "tripwire", "serve", "--rules", str(rules), "--data", str(data), "--port", str(port)],
        env,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return server
        except httpx.ConnectError:
            pass
        assert time.monotonic() < deadline and server.proc.poll() is None, "the server did not start"
        time.sleep(0.05)


def wait(check: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_crash_between_send_and_record_resends_once_with_the_same_key(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    servers: list[Lines] = []
    with receiver() as rx:
        (tmp_path / "rules.yaml").write_text(RULES.replace("URL", rx.url))

        def crash_on_first_request() -> None:
            if len(rx.requests) == 1:  # the webhook is in; the server has not recorded it yet
                os.kill(servers[0].proc.pid, signal.SIGKILL)
                servers[0].proc.wait()

        rx.on_request.append(crash_on_first_request)
        servers.append(start_server(tmp_path / "rules.yaml", data, port))
        now = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        event = {"type": "track", "event": "purchase", "userId": "u1", "messageId": "m1", "timestamp": now}
        assert httpx.post(f"http://127.0.0.1:{port}/v1/track", json=event, auth=("wk", "")).status_code == 200
        wait(lambda: servers[0].proc.poll() is not None)
        assert len(rx.requests) == 1

        servers.append(start_server(tmp_path / "rules.yaml", data, port))
        try:
            wait(lambda: [d.status for d in SqliteOutbox(data).find()] == ["delivered"])
            time.sleep(0.5)  # nothing more is coming
        finally:
            servers[1].stop()
            servers[0].stop()
    keys = [r.headers["webhook-id"] for r in rx.requests]
    assert len(keys) == 2 and len(set(keys)) == 1  # at least once, and the receiver can tell
    fires = SqliteStore(data).fires()
    assert [f.fire_id for f in fires] == keys[:1]
