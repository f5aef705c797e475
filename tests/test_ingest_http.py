"""Segment-compatible ingest over HTTP, against the real Service on SQLite: what a Segment
SDK sends is stored and answered as Segment would, and every bad request says what to fix."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from http_harness import (
    ADMIN,
    ADMIN_TOKEN,
    OTHER_WRITE_KEY,
    RULES,
    T0,
    T0_MS,
    WRITE_KEY,
    Clock,
    Harness,
    basic,
    harness,
    live_server,
    make_app,
    make_service,
    track,
)
from tripwire.limits import MAX_STRING
from tripwire.server.auth import Secret
from tripwire.server.ingest import MAX_BATCH_BYTES, MAX_EVENT_BYTES, Inflater
from tripwire.server.metrics import Metrics
from tripwire.timestamps import format_ms


async def logged(h: Harness, **query: str) -> list[dict[str, Any]]:
    """The event log as the admin API shows it, oldest first."""
    async with h.client() as client:
        reply = await client.get("/api/events", params={"limit": "1000", **query}, headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return list(reversed(reply.json()["events"]))


@pytest.fixture
async def h(tmp_path: Path) -> Any:
    async with harness(tmp_path) as started:
        yield started


async def post(
    h: Harness, path: str, body: Any = None, *, content: bytes | None = None, **headers: str
) -> httpx.Response:
    async with h.client() as client:
        if content is None:
            content = json.dumps(body).encode()
        return await client.post(path, content=content, headers=headers)


def key_headers(key: str = WRITE_KEY) -> dict[str, str]:
    return basic(key)


# -- the happy paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/track", {"event": "purchase", "userId": "u1", "properties": {"total": 10}}),
        ("/v1/identify", {"userId": "u1", "traits": {"plan": "pro"}}),
        ("/v1/page", {"anonymousId": "a1", "name": "Pricing"}),
        ("/v1/screen", {"userId": "u1", "name": "Home"}),
        ("/v1/alias", {"previousId": "a1", "userId": "u1"}),
        ("/v1/group", {"userId": "u1", "groupId": "g1"}),
    ],
)
async def test_each_single_event_endpoint_stores_its_type_and_answers_success(
    h: Harness, path: str, body: dict[str, Any]
) -> None:
    reply = await post(h, path, {**body, "timestamp": T0}, **key_headers())
    assert reply.status_code == 200 and reply.json() == {"success": True}
    [entry] = await logged(h)
    assert entry["event"]["type"] == path.rsplit("/", 1)[1]
    assert entry["decision"] == "accepted"


async def test_the_path_decides_the_type_of_a_single_event(h: Harness) -> None:
    reply = await post(h, "/v1/page", {"type": "track", "event": "x", "userId": "u1", "timestamp": T0}, **key_headers())
    assert reply.status_code == 200
    assert (await logged(h))[0]["event"]["type"] == "page"


async def test_the_server_sets_received_at_and_a_uuid4_message_id_when_none_is_sent(h: Harness) -> None:
    body = {**track(), "receivedAt": "2020-01-01T00:00:00Z"}
    await post(h, "/v1/track", body, **key_headers())
    await post(h, "/v1/track", track(messageId="client-id-1"), **key_headers())
    first, second = await logged(h)
    assert first["event"]["receivedAt"] == T0  # the service clock, not the client's claim
    assert uuid.UUID(first["message_id"]).version == 4
    assert second["message_id"] == "client-id-1"


async def test_import_is_the_same_as_batch(h: Harness) -> None:
    reply = await post(h, "/v1/import", {"batch": [track(messageId="m1")]}, **key_headers())
    assert reply.status_code == 200 and reply.json() == {"success": True}
    assert [e["message_id"] for e in await logged(h)] == ["m1"]


async def test_batch_sent_at_and_context_apply_to_each_event_and_its_own_fields_win(h: Harness) -> None:
    """sentAt corrects the client clock (SPEC §1); contexts merge by top-level key."""
    body = {
        "sentAt": "2026-03-01T11:00:02.000Z",  # the client's clock runs an hour behind
        "context": {"library": {"name": "sdk"}, "ip": "10.0.0.1"},
        "batch": [
            track(messageId="m1", timestamp="2026-03-01T11:00:00.000Z", context={"ip": "10.0.0.2"}),
            track(messageId="m2", timestamp=T0, sentAt=T0),
        ],
    }
    reply = await post(h, "/v1/batch", body, **key_headers())
    assert reply.status_code == 200, reply.text
    first, second = (entry["event"] for entry in await logged(h))
    assert first["timestamp"] == "2026-03-01T11:59:58.000Z"  # receivedAt - (sentAt - timestamp)
    assert first["originalTimestamp"] == "2026-03-01T11:00:00.000Z"
    assert first["context"] == {"library": {"name": "sdk"}, "ip": "10.0.0.2"}
    assert second["timestamp"] == T0  # its own sentAt won: no skew
    assert second["context"] == {"library": {"name": "sdk"}, "ip": "10.0.0.1"}


async def test_duplicates_and_late_events_get_200_and_are_counted_by_decision(h: Harness) -> None:
    """The SDK must not retry them: sending again cannot change their fate."""
    for _ in range(2):
        reply = await post(h, "/v1/track", track(messageId="same"), **key_headers())
        assert reply.status_code == 200
    late = track(messageId="old", timestamp=format_ms(T0_MS - 60_000))
    assert (await post(h, "/v1/track", late, **key_headers())).status_code == 200
    assert [e["decision"] for e in await logged(h)] == ["accepted", "duplicate", "late"]
    value = h.metrics.registry.get_sample_value
    assert value("tripwire_events_total", {"decision": "accepted"}) == 1
    assert value("tripwire_events_total", {"decision": "duplicate"}) == 1
    assert value("tripwire_events_total", {"decision": "late"}) == 1
    assert value("tripwire_events_received_total") == 3
    assert value("tripwire_ingest_latency_seconds_count") == 3


async def test_content_type_does_not_matter_as_long_as_the_body_is_json(h: Harness) -> None:
    """analytics.js sends text/plain to avoid a CORS preflight."""
    body = json.dumps({**track(), "writeKey": WRITE_KEY}).encode()
    reply = await post(h, "/v1/track", content=body, **{"Content-Type": "text/plain"})
    assert reply.status_code == 200


async def test_ingest_answers_cors_so_browsers_can_send_but_the_admin_api_does_not(h: Harness) -> None:
    async with h.client() as client:
        preflight = await client.options(
            "/v1/batch", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
        )
        admin = await client.get("/api/triggers", headers={**ADMIN, "Origin": "https://shop.example"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-origin" not in admin.headers


# -- write keys --------------------------------------------------------------------------


async def test_a_write_key_in_the_body_works_and_is_never_stored(h: Harness) -> None:
    single = await post(h, "/v1/track", {**track(messageId="m1"), "writeKey": WRITE_KEY})
    batch = await post(h, "/v1/batch", {"writeKey": OTHER_WRITE_KEY, "batch": [{**track(messageId="m2")}]})
    assert single.status_code == 200 and batch.status_code == 200
    entries = await logged(h)
    assert [e["message_id"] for e in entries] == ["m1", "m2"]
    assert all("writeKey" not in e["event"] for e in entries)


@pytest.mark.parametrize(
    ("headers", "body_key", "problem"),
    [
        ({}, None, "no write key was given"),
        (basic("wrong"), None, "the write key is not valid"),
        ({}, "wrong", "the write key is not valid"),
        (basic("wrong"), WRITE_KEY, "the write key is not valid"),  # the header decides
        ({"Authorization": f"Bearer {WRITE_KEY}"}, None, "no write key was given"),
    ],
)
async def test_a_missing_or_bad_write_key_is_401_saying_how_to_pass_it(
    h: Harness, headers: dict[str, str], body_key: str | None, problem: str
) -> None:
    body = track() if body_key is None else {**track(), "writeKey": body_key}
    reply = await post(h, "/v1/track", body, **headers)
    assert reply.status_code == 401
    error = reply.json()
    assert error["success"] is False and error["code"] == "unauthorized"
    assert error["message"].startswith(problem)
    assert "HTTP Basic user name" in error["message"] and "writeKey" in error["message"]
    assert await logged(h) == []


# -- bad bodies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code", "says"),
    [
        (b'{"batch": [', "bad_json", "the body is not valid JSON"),
        (b"", "bad_json", "the body is not valid JSON"),
        (b"[1, 2]", "bad_request", "the body must be a JSON object, not a list"),
        (b'"text"', "bad_request", "the body must be a JSON object, not str"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400_naming_the_problem(
    h: Harness, content: bytes, code: str, says: str
) -> None:
    reply = await post(h, "/v1/batch", content=content, **key_headers())
    assert reply.status_code == 400
    assert reply.json()["code"] == code and says in reply.json()["message"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"userId": 42}, "userId"),
        ({"userId": None}, "userId"),
        ({"properties": "cheap"}, "properties"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"event": ""}, "event"),
        ({"messageId": 7}, "messageId"),
    ],
)
async def test_a_bad_single_event_is_400_naming_the_field(h: Harness, fields: dict[str, Any], field: str) -> None:
    reply = await post(h, "/v1/track", {**track(), **fields}, **key_headers())
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == "bad_request"
    assert body["errors"] == [{"index": 0, "field": field, "message": body["errors"][0]["message"]}]
    assert f"{field}: " in body["message"]
    assert await logged(h) == []


async def test_a_batch_with_bad_events_keeps_the_good_ones_and_lists_the_bad(h: Harness) -> None:
    batch = [
        track(messageId="good1"),
        {**track(messageId="bad1"), "userId": 42},
        "not an event",
        track(messageId="good2", event="add_to_cart"),
    ]
    reply = await post(h, "/v1/batch", {"batch": batch}, **key_headers())
    assert reply.status_code == 200
    body = reply.json()
    assert body["success"] is True and body["accepted"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "userId"), (2, "(event)")]
    assert [e["message_id"] for e in await logged(h)] == ["good1", "good2"]
    assert h.metrics.registry.get_sample_value("tripwire_events_total", {"decision": "bad"}) == 2


async def test_a_batch_of_only_bad_events_is_400_with_every_error(h: Harness) -> None:
    reply = await post(h, "/v1/batch", {"batch": [{"type": "nope", "userId": "u"}, {"event": "x"}]}, **key_headers())
    assert reply.status_code == 400
    assert [(e["index"], e["field"]) for e in reply.json()["errors"]] == [(0, "type"), (1, "userId")]


@pytest.mark.parametrize(
    ("body", "field"), [({"batch": {"a": 1}}, "batch"), ({}, "batch"), ({"batch": [], "context": []}, "context")]
)
async def test_a_batch_whose_envelope_is_wrong_is_400_naming_the_field(
    h: Harness, body: dict[str, Any], field: str
) -> None:
    reply = await post(h, "/v1/batch", body, **key_headers())
    assert reply.status_code == 400 and reply.json()["field"] == field
    assert reply.json()["message"].startswith(f"{field}: ")


async def test_an_event_more_than_a_day_in_the_future_is_bad_since_it_would_make_all_others_late(h: Harness) -> None:
    ahead = format_ms(T0_MS + 25 * 3_600_000)
    reply = await post(h, "/v1/batch", {"batch": [track(messageId="f", timestamp=ahead), track()]}, **key_headers())
    [error] = reply.json()["errors"]
    assert error["field"] == "timestamp" and "check the client clock" in error["message"]
    soon = format_ms(T0_MS + 23 * 3_600_000)
    assert (await post(h, "/v1/track", track(timestamp=soon), **key_headers())).status_code == 200


# -- structural limits (docs/server.md, Limits and bad input) ---------------------------


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"properties": {"n": 2**64}}, "properties.n", "64-bit"),
        ({"properties": {"a": {"b": [1, 2, 3, -(2**70)]}}}, "properties.a.b[3]", "64-bit"),
        ({"properties": {"a": deep(70)}}, "properties.a" + ".a" * 62, "deeper than 64"),
        ({"properties": {"k" * 300: 1}}, "properties", "a key of 300"),
        ({"context": {f"k{i}": i for i in range(1001)}}, "context", "1001 keys"),
        ({"properties": {"l": [0] * 2001}}, "properties.l", "2001 items"),
        ({"properties": {"s": "x" * 16_385}}, "properties.s", "string of 16385"),
    ],
)
async def test_a_single_event_past_a_limit_is_400_naming_the_path(
    h: Harness, fields: dict[str, Any], field: str, fragment: str
) -> None:
    reply = await post(h, "/v1/track", track(**fields), **key_headers())
    assert reply.status_code == 400, reply.text
    [error] = reply.json()["errors"]
    assert error["field"] == field and fragment in error["message"]
    assert await logged(h) == []


async def test_an_event_nested_within_the_limit_but_past_the_fast_decode_is_stored(h: Harness) -> None:
    reply = await post(h, "/v1/batch", {"batch": [track(messageId="d", properties={"a": deep(40)})]}, **key_headers())
    assert reply.json() == {"success": True}
    assert [e["message_id"] for e in await logged(h)] == ["d"]


async def test_an_event_that_does_not_decode_is_named_and_its_batch_neighbours_kept(h: Harness) -> None:
    """Issue 7 item 3: 1,100 levels used to be a 500, and the SDK's retries lost the whole batch."""
    good = json.dumps(track(messageId="good")).encode()
    nan = b'{"type":"track","event":"x","userId":"u","properties":{"p":[1,NaN]}}'
    far = b'{"type":"track","event":"x","userId":"u","properties":' + b"[" * 1100 + b"]" * 1100 + b"}"
    lone = b'{"type":"track","event":"x","userId":"u","traits":{"t":"\\ud800"}}'  # a lone surrogate
    body = b'{"batch":[' + b",".join([nan, good, far, lone]) + b'],"sentAt":"' + T0.encode() + b'"}'
    reply = await post(h, "/v1/batch", content=body, **key_headers())
    assert reply.status_code == 200, reply.text
    errors = reply.json()["errors"]
    assert [(e["index"], e["field"].split("[0][0]")[0]) for e in errors] == [
        (0, "properties.p[1]"),
        (2, "properties"),
        (3, "traits.t"),
    ]
    assert all("not valid JSON" in e["message"] for e in errors)
    assert [e["message_id"] for e in await logged(h)] == ["good"]


async def test_a_batch_context_past_a_limit_is_400_naming_it(h: Harness) -> None:
    body = {"batch": [track()], "context": {"ip": "1.2.3.4", "n": 2**64}}
    reply = await post(h, "/v1/batch", body, **key_headers())
    assert reply.status_code == 400 and reply.json()["field"] == "context.n"


@pytest.mark.parametrize(
    ("content", "field"),
    [(b'{"batch": [{"a": 1}', None), (b'{"event": "x", "userId": "u", "properties": {"v": NaN}}', "properties.v")],
)
async def test_a_body_that_is_not_json_is_400_saying_where_when_it_can(
    h: Harness, content: bytes, field: str | None
) -> None:
    path = "/v1/batch" if content.startswith(b'{"batch"') else "/v1/track"
    reply = await post(h, path, content=content, **key_headers())
    assert reply.status_code == 400
    assert reply.json()["code"] == "bad_json" and reply.json().get("field") == field


async def test_the_rules_clock_skew_tolerance_decides_whether_ingest_corrects(tmp_path: Path) -> None:
    """SPEC §1: a client clock 5 s off is corrected with the default 2 s, kept with 10 s."""
    sent = format_ms(T0_MS - 5_000)  # the client's clock is 5 s behind the server's T0
    stamp = format_ms(T0_MS - 6_000)
    for tolerance, expected in (("2s", T0_MS - 1_000), ("10s", T0_MS - 6_000)):
        rules = RULES.replace("settings: {allowed_lateness: 5s}", f"settings: {{clock_skew_tolerance: {tolerance}}}")
        (tmp_path / tolerance).mkdir()
        async with harness(tmp_path / tolerance, rules=rules) as started:
            reply = await post(started, "/v1/track", track(timestamp=stamp, sentAt=sent), **key_headers())
            assert reply.status_code == 200, reply.text
            [stored] = await logged(started)
            assert stored["event"]["timestamp"] == format_ms(expected)


# -- sizes and encodings -----------------------------------------------------------------


def padded(size: int, **fields: Any) -> dict[str, Any]:
    """An event of about `size` bytes JSON-encoded, in strings within the limit of one string."""
    chunk = MAX_STRING // 2
    return track(properties={f"pad{i}": "x" * chunk for i in range(size // chunk + 1)}, **fields)


async def test_a_single_event_over_32_kb_is_413(h: Harness) -> None:
    reply = await post(h, "/v1/track", padded(MAX_EVENT_BYTES), **key_headers())
    assert reply.status_code == 413
    assert reply.json()["code"] == "too_large" and "32 KB" in reply.json()["message"]


async def test_an_event_over_32_kb_in_a_batch_is_reported_bad_and_the_others_kept(h: Harness) -> None:
    batch = [track(messageId="small"), padded(MAX_EVENT_BYTES, messageId="big")]
    reply = await post(h, "/v1/batch", {"batch": batch}, **key_headers())
    assert reply.status_code == 200
    [error] = reply.json()["errors"]
    assert error["index"] == 1 and error["field"] == "(event)" and "32 KB" in error["message"]
    assert [e["message_id"] for e in await logged(h)] == ["small"]


async def test_a_batch_over_500_kb_is_413_whole(h: Harness) -> None:
    batch = [padded(30_000, messageId=f"m{i}") for i in range(18)]
    reply = await post(h, "/v1/batch", {"batch": batch}, **key_headers())
    assert reply.status_code == 413 and "500 KB" in reply.json()["message"]
    assert await logged(h) == []


async def test_a_gzip_body_is_accepted(h: Harness) -> None:
    body = gzip.compress(json.dumps({"batch": [track(messageId="gz")]}).encode())
    reply = await post(h, "/v1/batch", content=body, **key_headers(), **{"Content-Encoding": "gzip"})
    assert reply.status_code == 200
    assert [e["message_id"] for e in await logged(h)] == ["gz"]


async def test_a_gzip_bomb_is_413_without_inflating_it(h: Harness) -> None:
    bomb = gzip.compress(b" " * 50_000_000, compresslevel=9)
    assert len(bomb) < MAX_BATCH_BYTES
    reply = await post(h, "/v1/batch", content=bomb, **key_headers(), **{"Content-Encoding": "gzip"})
    assert reply.status_code == 413
    inflater = Inflater(MAX_BATCH_BYTES)
    assert not inflater.feed(bomb)
    assert len(inflater.out) == MAX_BATCH_BYTES + 1  # it stopped one byte past the limit


@pytest.mark.parametrize(
    ("content", "encoding", "status", "code"),
    [
        (b'{"batch": []}', "gzip", 400, "bad_gzip"),  # not gzip at all
        (gzip.compress(b'{"batch": []}')[:-12], "gzip", 400, "bad_gzip"),  # cut short
        (b'{"batch": []}', "br", 415, "unsupported_encoding"),
    ],
)
async def test_a_body_that_does_not_match_its_content_encoding_is_refused(
    h: Harness, content: bytes, encoding: str, status: int, code: str
) -> None:
    reply = await post(h, "/v1/batch", content=content, **key_headers(), **{"Content-Encoding": encoding})
    assert reply.status_code == status and reply.json()["code"] == code


# -- when the service cannot take events -------------------------------------------------


async def test_overload_is_429_with_retry_after(tmp_path: Path) -> None:
    async with harness(tmp_path, max_queued_events=1) as h:
        reply = await post(h, "/v1/batch", {"batch": [track(messageId="1"), track(messageId="2")]}, **key_headers())
        assert reply.status_code == 429
        assert reply.headers["Retry-After"] == "1"
        assert reply.json()["code"] == "overloaded"
        assert await logged(h) == []


async def test_a_service_that_is_not_running_is_503_with_retry_after(tmp_path: Path) -> None:
    async with harness(tmp_path, start=False) as h:
        reply = await post(h, "/v1/track", track(), **key_headers())
        async with h.client() as client:
            ready = await client.get("/readyz")
            health = await client.get("/healthz")
    assert reply.status_code == 503 and int(reply.headers["Retry-After"]) > 0
    assert ready.status_code == 503 and health.status_code == 200


# -- credentials stay secret -------------------------------------------------------------


def test_a_secret_never_shows_its_value() -> None:
    secret = Secret("hunter2-hunter2")
    assert "hunter2" not in f"{secret} {secret!r} {[secret]} { {'k': secret} }"
    assert secret.reveal() == "hunter2-hunter2"
    assert secret.matches("hunter2-hunter2") and not secret.matches("hunter2") and not secret.matches(None)
    with pytest.raises(TypeError):
        pickle.dumps(secret)


async def test_logs_are_json_one_line_a_request_and_never_hold_a_credential(h: Harness) -> None:
    async with h.client() as client:
        await client.post("/v1/track", json=track(messageId="a"), headers=basic(WRITE_KEY))
        await client.post("/v1/track", json={**track(messageId="b"), "writeKey": OTHER_WRITE_KEY})
        await client.post("/v1/track", json=track(), headers=basic(WRITE_KEY + "x"))
        await client.post("/v1/batch", json={"writeKey": WRITE_KEY, "batch": [track(), {"event": 1}]})
        await client.get("/api/triggers", headers=ADMIN)
        await client.get("/api/triggers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"})
    text = h.logs.getvalue()
    for secret in (WRITE_KEY, OTHER_WRITE_KEY, ADMIN_TOKEN, basic(WRITE_KEY)["Authorization"]):
        assert secret[:12] not in text
    lines = [line for line in h.log_lines() if line["event"] == "request"]
    assert [(line["path"], line["status"], line["level"]) for line in lines] == [
        ("/v1/track", 200, "debug"),
        ("/v1/track", 200, "debug"),
        ("/v1/track", 401, "warning"),
        ("/v1/batch", 200, "warning"),  # one bad event in it
        ("/api/triggers", 200, "debug"),
        ("/api/triggers", 401, "warning"),
    ]
    assert lines[2]["error"].startswith("unauthorized: the write key is not valid")
    assert lines[3]["error"].startswith("bad_events: 1 bad, 1 kept")


# -- the real Segment SDK over real HTTP -------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Any:
    """A uvicorn server on 127.0.0.1 over a real Service, as `tripwire serve` runs it."""
    service, _ = make_service(tmp_path, Clock())
    app = make_app(service, Metrics(), io.StringIO())
    with live_server(service, app) as url:
        yield url


def events_of(url: str, **params: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{url}/api/events", params={"limit": "1000", **params}, headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return list(reversed(reply.json()["events"]))


def test_the_segment_python_sdk_sends_every_call_and_they_are_in_the_log(live: str) -> None:
    from segment import analytics

    saved = (analytics.write_key, analytics.host, analytics.sync_mode, analytics.default_client)
    analytics.write_key, analytics.host, analytics.sync_mode, analytics.default_client = WRITE_KEY, live, True, None
    try:
        analytics.identify("u1", {"plan": "pro", "email": "u1@example.com"}, anonymous_id="anon-1")
        analytics.track("u1", "add_to_cart", {"product_id": "p1"})
        analytics.page("u1", "Docs", "Pricing", {"path": "/pricing"})
        analytics.screen("u1", "App", "Home")
        analytics.group("u1", "g1", {"name": "Acme"})
        analytics.alias("anon-2", "u1")
    finally:  # sync mode has no consumer threads to shut down
        analytics.write_key, analytics.host, analytics.sync_mode, analytics.default_client = saved
    entries = events_of(live, user="u1")
    assert [(e["event"]["type"], e["decision"]) for e in entries] == [
        ("identify", "accepted"),
        ("track", "accepted"),
        ("page", "accepted"),
        ("screen", "accepted"),
        ("group", "accepted"),
        ("alias", "accepted"),
    ]
    identify, add, page = (e["event"] for e in entries[:3])
    assert identify["traits"]["plan"] == "pro" and identify["anonymousId"] == "anon-1"
    assert add["event"] == "add_to_cart" and add["properties"] == {"product_id": "p1"}
    assert page["name"] == "Pricing" and page["context"]["library"]["name"] == "analytics-python"
    assert entries[-1]["event"]["previousId"] == "anon-2"


def test_the_segment_sdk_batches_with_gzip_and_reports_our_errors(live: str) -> None:
    from segment.analytics.client import Client
    from segment.analytics.request import APIError

    client = Client(write_key=WRITE_KEY, host=live, gzip=True, upload_size=50)
    for n in range(120):
        client.track(f"user{n % 3}", "song_played", {"n": n})
    client.flush()
    client.shutdown()
    assert len(events_of(live)) == 120

    wrong = Client(write_key="not-a-key", host=live, sync_mode=True)
    with pytest.raises(APIError) as info:
        wrong.track("u1", "x")
    assert info.value.status == 401 and info.value.code == "unauthorized"
    assert "writeKey" in info.value.message


def test_a_too_large_batch_gets_its_413_over_real_http(live: str) -> None:
    body = json.dumps({"batch": [padded(30_000, messageId=f"m{i}") for i in range(40)]}).encode()
    reply = httpx.post(f"{live}/v1/batch", content=body, headers=basic(WRITE_KEY))
    assert reply.status_code == 413 and reply.json()["code"] == "too_large"
