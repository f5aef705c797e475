"""docs/server.md, Limits and bad input: the inbox API's parameters (`limit`, `before`, `ids`,
`lastEventId` and Last-Event-ID) over a real uvicorn server, where a huge or odd number used
to be a 500 or cut the stream."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from channel_kit import FIRE_ID, action, message, serve
from tripwire.actions.in_app import InAppChannel, Inbox
from tripwire.server.auth import Secret
from tripwire.server.inbox import MAX_ID, inbox_routes, user_token
from tripwire.server.replies import HANDLED, handle_error
from tripwire.store.inbox import SqliteInbox
from tripwire.store.sqlite import SqliteStore

WRITE_KEY = "wk_live_inbox_params_0123"
SECRET = Secret("inbox-secret-params-7a6b5c")
ACTIONS = """\
  bell:
    type: in_app
    title: "Hello"
    body: "{{ events[0].properties.sku }}"
"""
HUGE = "9" * 30  # past SQLite's integers
ODD_DIGITS = "\u00b2"  # "²": str.isdigit says yes, int() says no


@dataclass
class Setup:
    inbox: Inbox
    channel: InAppChannel
    url: str

    def headers(self, user: str = "u1") -> dict[str, str]:
        basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
        return {"Authorization": f"Basic {basic}", "X-User-Id": user, "X-User-Token": user_token(SECRET, user)}

    async def send(self, fire_id: str) -> None:
        events = [{"type": "track", "event": "add_to_cart", "properties": {"sku": "A-1"}}]
        await self.channel.attempt(message(self.channel.action, user_id="u1", fire_id=fire_id, events=events))


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    store = SqliteStore(tmp_path / "data")
    store.open()
    async with httpx.AsyncClient(trust_env=False) as http:
        inbox = Inbox(SqliteInbox(tmp_path / "data"))
        channel = InAppChannel(action(ACTIONS, "bell"), http, inbox=inbox)
        routes = inbox_routes(inbox, write_keys=[Secret(WRITE_KEY)], secret=SECRET, heartbeat=60.0)
        app = Starlette(routes=routes, exception_handlers=dict.fromkeys(HANDLED, handle_error))
        with serve(app) as url:
            try:
                yield Setup(inbox, channel, url)
            finally:
                inbox.feed.close()
    store.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        yield http


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"before": HUGE}, "before"),
        ({"before": str(MAX_ID + 1)}, "before"),
        ({"before": ODD_DIGITS}, "before"),
        ({"before": "-1"}, "before"),
        ({"limit": HUGE}, "limit"),
        ({"limit": ODD_DIGITS}, "limit"),
    ],
)
async def test_a_listing_parameter_that_is_no_id_is_400_naming_it(
    setup: Setup, client: httpx.AsyncClient, params: dict[str, str], name: str
) -> None:
    reply = await client.get(f"{setup.url}/v1/inbox", params=params, headers=setup.headers())
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] == "bad_parameter" and reply.json()["parameter"] == name
    assert reply.json()["message"].startswith(f"{name}: expected a whole number")


async def test_the_largest_id_is_a_good_before(setup: Setup, client: httpx.AsyncClient) -> None:
    await setup.send(FIRE_ID)
    reply = await client.get(f"{setup.url}/v1/inbox", params={"before": str(MAX_ID)}, headers=setup.headers())
    assert reply.status_code == 200 and [m["id"] for m in reply.json()["messages"]] == [1]


@pytest.mark.parametrize(
    "body",
    [
        {"ids": [int(HUGE)]},
        {"ids": [1, MAX_ID + 1]},
        {"ids": [-(2**70)]},
        {"ids": [0]},
        {"ids": [True]},
        {"ids": [1.0]},
        {"ids": list(range(1, 1002))},
    ],
)
async def test_read_ids_that_are_no_ids_are_400_naming_ids(
    setup: Setup, client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    reply = await client.post(f"{setup.url}/v1/inbox/read", json=body, headers=setup.headers())
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == "ids"


@pytest.mark.parametrize(
    ("content", "status"),
    [(b'{"ids": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400), (b'{"ids": [' + b"1," * 40_000 + b"1]}", 413)],
)
async def test_a_read_body_too_deep_or_too_large_is_refused(
    setup: Setup, client: httpx.AsyncClient, content: bytes, status: int
) -> None:
    reply = await client.post(f"{setup.url}/v1/inbox/read", content=content, headers=setup.headers())
    assert reply.status_code == status, reply.text


async def test_a_bad_last_event_id_query_parameter_is_400_naming_it(setup: Setup, client: httpx.AsyncClient) -> None:
    for bad in (HUGE, ODD_DIGITS, "x"):
        reply = await client.get(f"{setup.url}/v1/inbox/stream", params={"lastEventId": bad}, headers=setup.headers())
        assert reply.status_code == 400, reply.text
        assert reply.json()["parameter"] == "lastEventId"


async def next_id(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("id: "):
            return line[4:]
    raise AssertionError("the stream ended")


@pytest.mark.parametrize("header", [HUGE, ODD_DIGITS, "x", str(MAX_ID + 1)])
async def test_a_bad_last_event_id_header_is_ignored_and_the_stream_stays_open(
    setup: Setup, client: httpx.AsyncClient, header: str
) -> None:
    """EventSource sends Last-Event-ID by itself on reconnecting; a 400 would end its retries."""
    await setup.send(FIRE_ID)  # already there: a stream that starts fresh does not replay it
    headers: dict[str, str | bytes] = {**setup.headers(), "Last-Event-ID": header.encode("latin-1")}
    async with client.stream("GET", f"{setup.url}/v1/inbox/stream", headers=headers) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert await anext(lines) == "retry: 3000"
        await setup.send("b" * 32)
        assert await asyncio.wait_for(next_id(lines), 5) == "2"


async def test_the_largest_last_event_id_is_good(setup: Setup, client: httpx.AsyncClient) -> None:
    headers = setup.headers() | {"Last-Event-ID": str(MAX_ID)}
    async with client.stream("GET", f"{setup.url}/v1/inbox/stream", headers=headers) as response:
        assert response.status_code == 200
        assert await anext(response.aiter_lines()) == "retry: 3000"
