"""What the channel tests share: actions from YAML, messages built by hand, and local stand-ins.

A stand-in is a real HTTP server (uvicorn on a free 127.0.0.1 port, in its own thread)
that records every request and answers with the test's `respond`; nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from tripwire.actions.base import Message
from tripwire.rules import ActionConfig, parse_rules

FIRE_ID = "5b2f0c6a9d1e4f7a8b3c2d1e0f9a8b7c"
FIRE_TIME = "2026-03-01T12:00:00.000Z"


def action(actions_yaml: str, action_id: str, environ: Mapping[str, str] | None = None) -> ActionConfig:
    """The action `action_id` of a rules file whose `actions:` section is `actions_yaml` (indented 2)."""
    text = "triggers:\n  t: {when: x}\nactions:\n" + actions_yaml
    return parse_rules(text, environ=environ or {}).actions[action_id]


def message(
    config: ActionConfig,
    *,
    user_id: str = "u1",
    traits: dict[str, Any] | None = None,
    fire_id: str = FIRE_ID,
    events: list[dict[str, Any]] | None = None,
) -> Message:
    fire = {
        "trigger": "cart_abandonment",
        "user_id": user_id,
        "key": None,
        "fire_time": FIRE_TIME,
        "fire_id": fire_id,
        "events": ["m1"],
        "suppressed": None,
    }
    if events is None:
        events = [{"type": "track", "event": "add_to_cart", "userId": user_id, "messageId": "m1",
                   "properties": {"sku": "A-1", "price": 12.5}}]  # fmt: skip
    return Message(1, config, fire, {"id": user_id, "traits": traits or {}}, events)


@dataclass
class Received:
    """One request as the stand-in saw it; header names in lower case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Respond = Callable[[Received], Response | Awaitable[Response]]


def ok(_request: Received) -> Response:
    return JSONResponse({"ok": True})


@dataclass
class StandIn:
    """A recording HTTP server; set `respond` to script its answers."""

    url: str = ""
    respond: Respond = ok
    requests: list[Received] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request = Received(scope["method"], scope["path"], scope["query_string"].decode(), headers, bytes(body))
        self.requests.append(request)
        response = self.respond(request)
        if inspect.isawaitable(response):
            response = await response
        await response(scope, receive, send)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(
    app: Any, around: Callable[[], AbstractAsyncContextManager[Any]] | None = None, **options: Any
) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port in a thread; yields its base URL.

    `around`, if given, is entered in the server's event loop before it serves and left
    after it stops (a service to start first and stop last, as `tripwire serve` does).
    `options` go to uvicorn's Config (`ssl_certfile`, `ssl_keyfile` for HTTPS).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=2, **options
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    async def main() -> None:
        if around is None:
            await server.serve(sockets=[sock])
            return
        async with around():
            await server.serve(sockets=[sock])

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, name="stand-in", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert not failure, failure
        assert time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not failure, failure


@contextmanager
def stand_in(respond: Respond = ok, **options: Any) -> Iterator[StandIn]:
    app = StandIn(respond=respond)
    with serve(app, **options) as url:
        app.url = url
        yield app
