"""The in-app channel and the inbox API over a real uvicorn server and SQLite: storage, identity
verification, read state, expiry, and the live stream (server-sent events)."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
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
from tripwire.server.credentials import load_credentials
from tripwire.server.inbox import inbox_routes, user_token
from tripwire.server.replies import HANDLED, handle_error
from tripwire.store.inbox import SqliteInbox
from tripwire.store.sqlite import SqliteStore

WRITE_KEY = "wk_live_inbox_0123456789"
SECRET = Secret("inbox-secret-for-tests-9f8e7d")
OTHER_FIRE = "a" * 32
ACTIONS = """\
  bell:
    type: in_app
    title: "{{ user.traits.name }}, your cart misses you"
    body: "{{ events[0].properties.sku }} is still in your cart"
    url: "/cart?sku={{ events[0].properties.sku }}"
    ttl: 1h
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_772_366_400.0  # 2026-03-01T12:00:00Z

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    inbox: Inbox
    channel: InAppChannel
    clock: Clock
    url: str

    def headers(self, user: str = "u1", token: str | None = None, key: str = WRITE_KEY) -> dict[str, str]:
        basic = base64.b64encode(f"{key}:".encode()).decode()
        return {
            "Authorization": f"Basic {basic}",
            "X-User-Id": user,
            "X-User-Token": user_token(SECRET, user) if token is None else token,
        }

    async def send(self, user: str = "u1", fire_id: str = FIRE_ID, sku: str = "A-1") -> Any:
        events = [{"type": "track", "event": "add_to_cart", "properties": {"sku": sku}}]
        sent = message(self.channel.action, user_id=user, traits={"name": "Ada"}, fire_id=fire_id, events=events)
        return await self.channel.attempt(sent)


@pytest.fixture
def heartbeat() -> float:
    return 0.2


@pytest.fixture
async def setup(tmp_path: Path, heartbeat: float) -> AsyncIterator[Setup]:
    store = SqliteStore(tmp_path / "data")
    store.open()  # migrations, the inbox table among them
    clock = Clock()
    async with httpx.AsyncClient(trust_env=False) as http:
        inbox = Inbox(SqliteInbox(tmp_path / "data"), clock=clock)
        channel = InAppChannel(action(ACTIONS, "bell"), http, inbox=inbox)
        routes = inbox_routes(inbox, write_keys=[Secret(WRITE_KEY)], secret=SECRET, heartbeat=heartbeat)
        app = Starlette(routes=routes, exception_handlers=dict.fromkeys(HANDLED, handle_error))
        with serve(app) as url:
            try:
                yield Setup(inbox, channel, clock, url)
            finally:
                inbox.feed.close()  # open streams end, so the server can stop
    store.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        yield http


# -- the channel ------------------------------------------------------------------------------


async def test_send_stores_the_rendered_message_once_per_fire(setup: Setup) -> None:
    first = await setup.send()
    again = await setup.send()
    assert first.ok and first.detail == {"inbox_id": 1, "created": True}
    assert again.ok and again.detail == {"inbox_id": 1, "created": False}
    [item] = await setup.inbox.messages("u1")
    assert (item.title, item.body, item.url) == (
        "Ada, your cart misses you",
        "A-1 is still in your cart",
        "/cart?sku=A-1",
    )
    assert (item.fire_id, item.action, item.read_at) == (FIRE_ID, "bell", None)
    assert item.expires_at == item.created_at + 3_600_000


# -- listing and reading ------------------------------------------------------------------------


async def test_the_inbox_lists_unexpired_messages_newest_first(setup: Setup, client: httpx.AsyncClient) -> None:
    await setup.send(fire_id=FIRE_ID, sku="A-1")
    setup.clock.now += 1800
    await setup.send(fire_id=OTHER_FIRE, sku="B-2")
    await setup.send(user="u2", fire_id="b" * 32)
    response = await client.get(f"{setup.url}/v1/inbox", headers=setup.headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["unread"] == 2
    assert [(m["id"], m["title"], m["body"], m["read"]) for m in body["messages"]] == [
        (2, "Ada, your cart misses you", "B-2 is still in your cart", False),
        (1, "Ada, your cart misses you", "A-1 is still in your cart", False),
    ]
    assert body["messages"][1] == {
        "id": 1, "title": "Ada, your cart misses you", "body": "A-1 is still in your cart", "url": "/cart?sku=A-1",
        "created_at": "2026-03-01T12:00:00.000Z", "expires_at": "2026-03-01T13:00:00.000Z", "read": False,
        "read_at": None, "fire_id": FIRE_ID, "action": "bell",
    }  # fmt: skip
    page = await client.get(f"{setup.url}/v1/inbox?limit=1&before=2", headers=setup.headers())
    assert [m["id"] for m in page.json()["messages"]] == [1]
    setup.clock.now += 1800  # the first message's hour is over
    later = (await client.get(f"{setup.url}/v1/inbox", headers=setup.headers())).json()
    assert [m["id"] for m in later["messages"]] == [2] and later["unread"] == 1
    assert await setup.inbox.purge() == 1


async def test_marking_messages_read(setup: Setup, client: httpx.AsyncClient) -> None:
    await setup.send(fire_id=FIRE_ID)
    await setup.send(fire_id=OTHER_FIRE)
    await setup.send(user="u2", fire_id="b" * 32)  # id 3, someone else's
    read = await client.post(f"{setup.url}/v1/inbox/read", json={"ids": [1, 3, 99]}, headers=setup.headers())
    assert read.status_code == 200 and read.json() == {"read": [1], "unread": 1}
    listed = (await client.get(f"{setup.url}/v1/inbox", headers=setup.headers())).json()["messages"]
    assert [(m["id"], m["read"], m["read_at"]) for m in listed] == [
        (2, False, None),
        (1, True, "2026-03-01T12:00:00.000Z"),
    ]
    again = await client.post(f"{setup.url}/v1/inbox/read", json={"ids": [1]}, headers=setup.headers())
    assert again.json() == {"read": [], "unread": 1}
    everything = await client.post(f"{setup.url}/v1/inbox/read", json={"all": True}, headers=setup.headers())
    assert everything.json() == {"read": [2], "unread": 0}
    other = (await client.get(f"{setup.url}/v1/inbox", headers=setup.headers("u2"))).json()
    assert other["unread"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not valid JSON"),
        (b'{"ids": "1"}', 'expected {"ids": [message ids]} or {"all": true}'),
        (b'{"ids": [1, "2"]}', "ids: expected a list of at most 1000 message ids"),
    ],
)
async def test_a_bad_read_request_is_refused(
    setup: Setup, client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    response = await client.post(f"{setup.url}/v1/inbox/read", content=body, headers=setup.headers())
    assert response.status_code == 400 and response.json()["message"].startswith(message)


# -- identity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "start"),
    [
        ({}, 401, "no write key was given"),
        ({"key": "wk_wrong"}, 401, "the write key is not valid"),
        ({"token": ""}, 401, "X-User-Token is missing"),
        ({"user": ""}, 401, "X-User-Id is missing"),
        ({"token": "00" * 32}, 403, "X-User-Token does not match X-User-Id 'u1'"),
        ({"token": user_token(SECRET, "u2")}, 403, "X-User-Token does not match X-User-Id 'u1'"),
        ({"token": user_token(Secret("another secret"), "u1")}, 403, "X-User-Token does not match"),
    ],
)
async def test_the_user_must_prove_who_they_are(
    setup: Setup, client: httpx.AsyncClient, headers: dict[str, str], status: int, start: str
) -> None:
    sent = setup.headers(**headers) if headers else {}
    for method, path in (("GET", "/v1/inbox"), ("POST", "/v1/inbox/read"), ("GET", "/v1/inbox/stream")):
        response = await client.request(method, setup.url + path, headers=sent, json={"ids": [1]})
        assert response.status_code == status, (path, response.text)
        assert response.json()["message"].startswith(start), response.json()
        assert response.json()["code"] == ("unauthorized" if status == 401 else "forbidden")


def test_the_user_token_is_hex_hmac_sha256_of_the_user_id() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"inbox-secret-for-tests-9f8e7d", b"u1", hashlib.sha256).hexdigest()
    assert user_token(SECRET, "u1") == expected and len(expected) == 64


# -- the live stream -----------------------------------------------------------------------------


async def read_event(lines: AsyncIterator[str]) -> dict[str, str]:
    """The next server-sent event (comments and retry lines skipped), as its fields."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if "data" in fields:
                return fields
            fields = {}
            continue
        name, _, value = line.partition(": ")
        if name in ("id", "event", "data"):
            fields[name] = value
    raise AssertionError("the stream ended")


@pytest.mark.parametrize("heartbeat", [60.0])  # no heartbeat during the test: leaving is noticed at once
async def test_a_new_message_arrives_on_the_open_stream(setup: Setup, client: httpx.AsyncClient) -> None:
    async with client.stream("GET", f"{setup.url}/v1/inbox/stream", headers=setup.headers()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        lines = response.aiter_lines()
        assert await anext(lines) == "retry: 3000"  # the stream is open and subscribed
        assert setup.inbox.feed.subscribers("u1") == 1
        await setup.send(user="u2", fire_id="b" * 32)  # not for this user
        assert (await setup.send()).ok
        event = await asyncio.wait_for(read_event(lines), 5)
        assert event["event"] == "message" and event["id"] == "2"
        data = json.loads(event["data"])
        assert (data["id"], data["title"], data["read"]) == (2, "Ada, your cart misses you", False)
        await setup.send()  # a retry of the same delivery streams nothing new
        await setup.send(fire_id=OTHER_FIRE, sku="B-2")
        event = await asyncio.wait_for(read_event(lines), 5)
        assert json.loads(event["data"])["body"] == "B-2 is still in your cart"
    await wait_for_no_subscribers(setup, "u1")  # the server noticed the client leave


async def test_heartbeats_keep_an_idle_stream_open(setup: Setup, client: httpx.AsyncClient) -> None:
    async with client.stream("GET", f"{setup.url}/v1/inbox/stream", headers=setup.headers()) as response:
        lines = response.aiter_lines()
        seen = [await asyncio.wait_for(anext(lines), 5) for _ in range(4)]
        assert seen == ["retry: 3000", "", ": heartbeat", ""]


async def test_a_reconnecting_stream_gets_what_it_missed(setup: Setup, client: httpx.AsyncClient) -> None:
    await setup.send(fire_id=FIRE_ID, sku="A-1")
    await setup.send(fire_id=OTHER_FIRE, sku="B-2")
    await setup.send(fire_id="c" * 32, sku="C-3")
    headers = setup.headers() | {"Last-Event-ID": "1"}
    async with client.stream("GET", f"{setup.url}/v1/inbox/stream", headers=headers) as response:
        lines = response.aiter_lines()
        missed = [await asyncio.wait_for(read_event(lines), 5) for _ in range(2)]
        assert [e["id"] for e in missed] == ["2", "3"]
        await setup.send(fire_id="d" * 32, sku="D-4")
        assert (await asyncio.wait_for(read_event(lines), 5))["id"] == "4"


async def test_a_browser_event_source_passes_credentials_in_the_query(setup: Setup, client: httpx.AsyncClient) -> None:
    params = {"writeKey": WRITE_KEY, "userId": "u1", "userToken": user_token(SECRET, "u1")}
    async with client.stream("GET", f"{setup.url}/v1/inbox/stream", params=params) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert await anext(lines) == "retry: 3000"
        await setup.send()
        assert (await asyncio.wait_for(read_event(lines), 5))["id"] == "1"
    listing = await client.get(f"{setup.url}/v1/inbox", params=params)
    assert listing.status_code == 401  # only the stream takes credentials in the URL


async def test_closing_the_feed_ends_open_streams(setup: Setup, client: httpx.AsyncClient) -> None:
    async with client.stream("GET", f"{setup.url}/v1/inbox/stream", headers=setup.headers()) as response:
        lines = response.aiter_lines()
        assert await anext(lines) == "retry: 3000"
        setup.inbox.feed.close()
        rest = [line async for line in lines]
        assert rest == [""]
    assert setup.inbox.feed.subscribers("u1") == 0


async def wait_for_no_subscribers(setup: Setup, user: str) -> None:
    for _ in range(250):
        if setup.inbox.feed.subscribers(user) == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the stream was not closed on the server")


# -- the inbox secret -----------------------------------------------------------------------------


def test_the_inbox_secret_comes_from_the_environment(tmp_path: Path) -> None:
    env = {"TRIPWIRE_INBOX_SECRET": "from-env", "TRIPWIRE_WRITE_KEYS": "wk", "TRIPWIRE_ADMIN_TOKEN": "adm"}
    credentials = load_credentials(tmp_path, env)
    assert credentials.inbox_secret.reveal() == "from-env"
    assert ("inbox secret", None, "from TRIPWIRE_INBOX_SECRET") in credentials.notes
    assert not (tmp_path / "credentials.json").exists()


def test_the_inbox_secret_is_made_once_and_kept_beside_the_other_credentials(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"write_keys": ["wk"], "admin_token": "adm"}))
    credentials = load_credentials(tmp_path, {})
    secret = credentials.inbox_secret
    assert ("inbox secret", secret.reveal(), f"new, saved in {path}") in credentials.notes
    assert len(secret.reveal()) >= 40
    saved = json.loads(path.read_text())
    assert saved == {"write_keys": ["wk"], "admin_token": "adm", "inbox_secret": secret.reveal()}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_credentials(tmp_path, {})
    assert again.inbox_secret.reveal() == secret.reveal()
    assert ("inbox secret", None, f"saved in {path}") in again.notes
    assert "inbox" not in repr(again.inbox_secret) and secret.reveal() not in repr(again.inbox_secret)
