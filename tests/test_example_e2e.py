"""The bundled example, end to end as a user runs it: `tripwire serve` with the example rules
(windows shortened), the example receiver, real HTTP and SMTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tripwire.actions.policies import in_holdout

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY, ADMIN, INBOX_SECRET = "wk_example", "adm_example", "inbox_example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daytime_zone() -> str:
    """An IANA zone where it is now about noon, outside the example's quiet hours."""
    offset = (12 - datetime.now(tz=UTC).hour) % 24
    offset = offset - 24 if offset > 12 else offset
    # Etc/GMT zones have the sign reversed: Etc/GMT-3 is UTC+3
    return "Etc/GMT" + ("" if offset == 0 else f"{-offset:+d}")


class Lines:
    """A subprocess whose stdout lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        self.lines: list[str] = []

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
        raise AssertionError(f"no line matching {pattern!r}; got:\n{''.join(self.lines[-30:])}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def example(tmp_path: Path) -> Iterator[tuple[str, Lines, Lines]]:
    rules = (ROOT / "examples/shop/rules.yaml").read_text()
    rules = rules.replace("allowed_lateness: 5s", "allowed_lateness: 1s").replace("within: 24h\n", "within: 2s\n")
    (tmp_path / "rules.yaml").write_text(rules)
    hook_port, smtp_port, port = free_port(), free_port(), free_port()
    env = {**os.environ, "TRIPWIRE_WRITE_KEYS": WRITE_KEY, "TRIPWIRE_ADMIN_TOKEN": ADMIN,
           "TRIPWIRE_INBOX_SECRET": INBOX_SECRET, "SHOP_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hooks",
           "SMTP_PORT": str(smtp_port)}  # fmt: skip
    receiver = Lines(
        [sys.executable, str(ROOT / "examples/shop/receiver.py"), "--webhook-port", str(hook_port),
         "--smtp-port", str(smtp_port)], env,
    )  # fmt: skip
    server = Lines(
        [sys.executable, "-m", "tripwire", "serve", "--rules", str(tmp_path / "rules.yaml"), "--data",
         str(tmp_path / "data"), "--port", str(port)], env,
    )  # fmt: skip
    try:
        receiver.wait_for("smtp")
        server.wait_for("Segment endpoint")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.ConnectError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.05)
        yield base, server, receiver
    finally:
        server.stop()
        receiver.stop()


def test_the_example_delivers_a_signed_webhook_an_email_and_an_in_app_message(
    example: tuple[str, Lines, Lines],
) -> None:
    base, _server, receiver = example
    user = next(u for u in (f"shopper{i}" for i in range(100)) if not in_holdout("cart_abandonment", u, 0.10))
    now = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    traits = {"email": f"{user}@example.com", "name": "Ada", "timezone": daytime_zone()}
    batch = [
        {"type": "identify", "userId": user, "traits": traits, "messageId": "e1", "timestamp": now},
        {"type": "track", "event": "product_viewed", "userId": user, "messageId": "e2", "timestamp": now},
        {"type": "track", "event": "product_viewed", "userId": user, "messageId": "e3", "timestamp": now},
        {"type": "track", "event": "add_to_cart", "userId": user, "messageId": "e4", "timestamp": now,
         "properties": {"product_id": "p1"}},
        {"type": "track", "event": "purchase", "userId": "vip", "messageId": "e5", "timestamp": now,
         "properties": {"total": 900}},
        {"type": "identify", "userId": "vip", "traits": {"email": "vip@example.com"}, "messageId": "e6",
         "timestamp": now},
    ]  # fmt: skip
    # the vip's identify comes after the purchase in the batch but at the same time: the
    # email trait guard sees it only if applied first, so send it first
    batch.insert(0, batch.pop())
    reply = httpx.post(f"{base}/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, ""))
    assert reply.status_code == 200, reply.text

    receiver.wait_for(r"webhook vip_purchase for vip")
    receiver.wait_for(rf"email to {user}@example.com: Ada, your cart is waiting", timeout=30)
    receiver.wait_for(rf"webhook cart_abandonment for {user}")
    assert not any("REJECTED" in line for line in receiver.lines)

    token = hmac.new(INBOX_SECRET.encode(), b"vip", hashlib.sha256).hexdigest()
    inbox = httpx.get(f"{base}/v1/inbox", auth=(WRITE_KEY, ""), headers={"X-User-Id": "vip", "X-User-Token": token})
    assert inbox.status_code == 200, inbox.text
    titles = [m["title"] for m in inbox.json()["messages"]]
    assert titles == ["Thank you, friend!"]

    admin = {"Authorization": f"Bearer {ADMIN}"}
    deliveries = httpx.get(f"{base}/api/deliveries", headers=admin).json()["deliveries"]
    assert sorted((d["action"], d["status"]) for d in deliveries) == [
        ("cart_email", "delivered"), ("crm_webhook", "delivered"), ("crm_webhook", "delivered"),
        ("thank_you_message", "delivered"),
    ]  # fmt: skip
