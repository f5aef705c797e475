"""The admin API, the OpenAPI document and the operations endpoints, against the real Service."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from http_harness import (
    ADMIN,
    ADMIN_TOKEN,
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
    wait_until,
)
from tripwire.server.metrics import Metrics
from tripwire.timestamps import format_ms


@pytest.fixture
async def h(tmp_path: Path) -> Any:
    async with harness(tmp_path) as started:
        yield started


async def get(h: Harness, path: str, headers: dict[str, str] | None = ADMIN, **params: str) -> httpx.Response:
    async with h.client() as client:
        return await client.get(path, params=params, headers=headers)


async def send(h: Harness, *events: dict[str, Any]) -> None:
    async with h.client() as client:
        reply = await client.post("/v1/batch", json={"batch": list(events)}, headers=basic(WRITE_KEY))
    assert reply.status_code == 200 and reply.json() == {"success": True}, reply.text


async def fired(h: Harness, count: int) -> list[dict[str, Any]]:
    """Move the service clock past the allowed lateness and wait for `count` fires."""
    h.clock.advance(10)

    async def enough() -> Any:
        fires = (await get(h, "/api/fires")).json()["fires"]
        return fires if len(fires) >= count else None

    result: list[dict[str, Any]] = await wait_until(enough)
    return result


async def two_purchases_and_a_cart(h: Harness) -> list[dict[str, Any]]:
    """u1 buys twice (a fire, then one suppressed by the 1h cooldown); u2 adds to cart."""
    await send(
        h,
        track("purchase", "u1", messageId="p1", properties={"total": 900}),
        track("purchase", "u1", messageId="p2", properties={"total": 600}, timestamp=format_ms(T0_MS + 1000)),
        track("add_to_cart", "u2", messageId="c1"),
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "timestamp": T0, "messageId": "i1"},
    )
    return await fired(h, 2)


def admin_routes(h: Harness) -> list[tuple[str, str]]:
    routes = [r for r in h.app.routes if isinstance(r, Route) and r.path.startswith("/api/")]
    return [
        (method, route.path.replace("{user_id}", "u1").replace("{delivery_id}", "1"))
        for route in routes
        if route.path != "/api/openapi.json"
        for method in sorted((route.methods or set()) - {"HEAD"})
    ]


# -- authorization -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, f"Bearer {ADMIN_TOKEN}x", f"Bearer {WRITE_KEY}", basic(ADMIN_TOKEN)["Authorization"], ADMIN_TOKEN],
)
async def test_every_admin_route_needs_the_admin_token(h: Harness, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with h.client() as client:
        for method, path in admin_routes(h):
            reply = await client.request(method, path, headers=headers)
            assert reply.status_code == 401, (method, path)
            assert reply.headers["WWW-Authenticate"] == "Bearer"
            assert "Authorization: Bearer" in reply.json()["message"]


async def test_the_admin_routes_are_all_there_and_answer_with_the_token(h: Harness) -> None:
    assert sorted(admin_routes(h)) == [
        ("GET", "/api/deliveries"),
        ("GET", "/api/deliveries/1"),
        ("GET", "/api/events"),
        ("GET", "/api/fires"),
        ("GET", "/api/quarantine"),
        ("GET", "/api/stats"),
        ("GET", "/api/triggers"),
        ("GET", "/api/users/u1"),
        ("POST", "/api/deliveries/retry"),
        ("POST", "/api/quarantine/retry"),
        ("POST", "/api/rules/reload"),
    ]
    await send(h, track(messageId="m1"))
    # these need a body or an existing delivery; tests/test_deliveries_admin.py and tests/test_isolation.py cover them
    needs_more = {("GET", "/api/deliveries/1"), ("POST", "/api/deliveries/retry"), ("POST", "/api/quarantine/retry")}
    async with h.client() as client:
        for method, path in admin_routes(h):
            if (method, path) in needs_more:
                continue
            reply = await client.request(method, path, headers=ADMIN)
            assert reply.status_code == 200, (method, path, reply.text)


# -- reads -------------------------------------------------------------------------------


async def test_triggers_lists_each_trigger_with_its_counts(h: Harness) -> None:
    await two_purchases_and_a_cart(h)
    triggers = {t["id"]: t for t in (await get(h, "/api/triggers")).json()["triggers"]}
    assert triggers["big_purchase"]["shape"] == "count"
    assert triggers["big_purchase"]["description"] == "a purchase of 500 or more"
    assert (triggers["big_purchase"]["fires"], triggers["big_purchase"]["suppressed"]) == (1, 1)
    assert (triggers["cart"]["fires"], triggers["cart"]["suppressed"]) == (0, 0)


async def test_fires_are_newest_first_with_spec_fields_and_the_suppression_detail(h: Harness) -> None:
    suppressed, fire = await two_purchases_and_a_cart(h)
    assert fire["fire_time"] == T0 and fire["events"] == ["p1"] and fire["suppressed"] is None
    assert suppressed["suppressed"] == "cooldown" and suppressed["detail"]
    assert set(fire) >= {"trigger", "user_id", "key", "fire_time", "fire_id", "events", "suppressed", "detail"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["p2", "p1"]),
        ({"trigger": "big_purchase"}, ["p2", "p1"]),
        ({"trigger": "cart"}, []),
        ({"user": "u1"}, ["p2", "p1"]),
        ({"user": "u2"}, []),
        ({"since": "2026-03-01T12:00:00.001Z"}, ["p2"]),
        ({"since": "2026-03-01T13:00:00+01:00"}, ["p2", "p1"]),
        ({"limit": "1"}, ["p2"]),
        ({"user": "", "trigger": ""}, ["p2", "p1"]),  # empty means not given
    ],
)
async def test_fires_filter_by_trigger_user_time_and_limit(
    h: Harness, params: dict[str, str], expected: list[str]
) -> None:
    await two_purchases_and_a_cart(h)
    fires = (await get(h, "/api/fires", **params)).json()["fires"]
    assert [f["events"][0] for f in fires] == expected


@pytest.mark.parametrize(
    ("path", "query", "parameter"),
    [
        ("/api/fires", "limit=0", "limit"),
        ("/api/fires", "limit=1001", "limit"),
        ("/api/fires", "limit=ten", "limit"),
        ("/api/fires", "limit=-1", "limit"),
        ("/api/fires", "since=yesterday", "since"),
        ("/api/fires", "users=u1", "users"),
        ("/api/fires", "limit=1&limit=2", "limit"),
        ("/api/events", "limit=5000", "limit"),
        ("/api/events", "trigger=cart", "trigger"),
        ("/api/triggers", "verbose=1", "verbose"),
        ("/api/users/u1", "x=1", "x"),
    ],
)
async def test_a_bad_query_parameter_is_400_naming_it(h: Harness, path: str, query: str, parameter: str) -> None:
    await send(h, track(messageId="m1"))
    async with h.client() as client:
        reply = await client.get(f"{path}?{query}", headers=ADMIN)
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == "bad_parameter" and body["parameter"] == parameter
    assert body["message"].startswith(f"{parameter}: ")


async def test_a_user_shows_traits_windows_events_and_explained_fires(h: Harness) -> None:
    await two_purchases_and_a_cart(h)
    u1 = (await get(h, "/api/users/u1")).json()
    assert u1["traits"] == {"plan": "pro"}
    assert [f["suppressed"] for f in u1["fires"]] == ["cooldown", None]
    assert all(f["explanation"] for f in u1["fires"])
    assert {e["message_id"] for e in u1["recent_events"]} == {"p1", "p2", "i1"}
    u2 = (await get(h, "/api/users/u2")).json()
    [window] = u2["open_windows"]
    assert window["trigger"] == "cart" and window["deadline"] == "2026-03-01T13:00:00.000Z"


async def test_an_unknown_user_is_404(h: Harness) -> None:
    reply = await get(h, "/api/users/nobody")
    assert reply.status_code == 404 and "nobody" in reply.json()["message"]


async def test_events_show_the_log_newest_first_by_user_and_limit(h: Harness) -> None:
    await send(h, track(messageId="a", user="u1"), track(messageId="b", user="u2"), track(messageId="a", user="u1"))
    everything = (await get(h, "/api/events")).json()["events"]
    assert [(e["message_id"], e["decision"]) for e in everything] == [
        ("a", "duplicate"),
        ("b", "accepted"),
        ("a", "accepted"),
    ]
    assert set(everything[0]) >= {"seq", "message_id", "decision", "received_at", "event"}
    assert [e["message_id"] for e in (await get(h, "/api/events", user="u2")).json()["events"]] == ["b"]
    assert len((await get(h, "/api/events", limit="1")).json()["events"]) == 1


# -- rules reload ------------------------------------------------------------------------


async def test_a_reload_puts_the_new_rules_in_force_and_answers_the_triggers(h: Harness) -> None:
    h.rules_path.write_text(h.rules_path.read_text() + "  idle:\n    inactive: 7d\n")
    async with h.client() as client:
        reply = await client.post("/api/rules/reload", headers=ADMIN)
    assert reply.status_code == 200
    assert [t["id"] for t in reply.json()["triggers"]] == ["big_purchase", "cart", "idle"]
    assert [t["id"] for t in (await get(h, "/api/triggers")).json()["triggers"]] == ["big_purchase", "cart", "idle"]
    assert h.metrics.registry.get_sample_value("tripwire_fires_total", {"trigger": "idle"}) == 0


async def test_a_bad_reload_is_422_with_every_problem_and_the_old_rules_stay(h: Harness) -> None:
    h.rules_path.write_text(
        "triggers:\n  a:\n    when: x\n    restart: true\n  b:\n    inactive: soon\n    colour: red\n"
    )
    async with h.client() as client:
        reply = await client.post("/api/rules/reload", headers=ADMIN)
    assert reply.status_code == 422
    body = reply.json()
    assert body["code"] == "invalid_rules" and "previous rules stay" in body["message"]
    problems = body["problems"]
    assert len(problems) >= 3
    for problem in problems:
        assert set(problem) == {"file", "line", "trigger", "field", "message"}
        assert problem["file"] == str(h.rules_path)
    assert {p["trigger"] for p in problems} == {"a", "b"}
    assert all(isinstance(p["line"], int) for p in problems)
    assert [t["id"] for t in (await get(h, "/api/triggers")).json()["triggers"]] == ["big_purchase", "cart"]


# -- OpenAPI -----------------------------------------------------------------------------


async def test_the_openapi_document_needs_no_token_and_describes_every_route(h: Harness) -> None:
    reply = await get(h, "/api/openapi.json", headers=None)
    assert reply.status_code == 200
    document = reply.json()
    assert document["openapi"].startswith("3.")
    routes = [r for r in h.app.routes if isinstance(r, Route)]
    assert len(routes) == 26  # 4 operations, 8 ingest, 5 admin, 4 for deliveries, 2 quarantine, 3 for the inbox
    for route in routes:
        assert route.path in document["paths"], route.path
        for method in (route.methods or set()) - {"HEAD"}:
            operation = document["paths"][route.path][method.lower()]
            assert operation["summary"] and "200" in operation["responses"]
    assert set(document["paths"]) == {r.path for r in routes}


async def test_every_reference_in_the_openapi_document_resolves(h: Harness) -> None:
    document = (await get(h, "/api/openapi.json", headers=None)).json()
    schemas = document["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if "$ref" in node else []
            return own + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    found = refs(document)
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


# -- operations --------------------------------------------------------------------------


async def test_healthz_and_readyz(h: Harness) -> None:
    assert (await get(h, "/healthz", headers=None)).status_code == 200
    assert (await get(h, "/readyz", headers=None)).json() == {"ready": True}


async def test_metrics_expose_counters_histogram_gauges_and_fires_in_an_app_owned_registry(h: Harness) -> None:
    await two_purchases_and_a_cart(h)
    async with h.client() as client:
        await client.post("/v1/batch", json={"batch": [{"event": "x"}]}, headers=basic(WRITE_KEY))
    reply = await get(h, "/metrics", headers=None)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }
    assert samples[("tripwire_events_received_total", ())] == 5
    assert samples[("tripwire_events_total", (("decision", "accepted"),))] == 4
    assert samples[("tripwire_events_total", (("decision", "bad"),))] == 1
    assert samples[("tripwire_events_total", (("decision", "late"),))] == 0
    assert samples[("tripwire_events_total", (("decision", "duplicate"),))] == 0
    assert samples[("tripwire_ingest_latency_seconds_count", ())] == 1
    assert samples[("tripwire_fires_total", (("trigger", "big_purchase"),))] == 1
    assert samples[("tripwire_suppressed_total", (("trigger", "big_purchase"),))] == 1
    assert samples[("tripwire_fires_total", (("trigger", "cart"),))] == 0
    assert ("tripwire_engine_lag_seconds", ()) in samples
    assert samples[("tripwire_timer_backlog", ())] == 1  # u2's cart window
    assert REGISTRY.get_sample_value("tripwire_events_received_total") is None  # not the global registry


async def test_an_unknown_route_is_a_json_404_pointing_at_the_document(h: Harness) -> None:
    reply = await get(h, "/api/nothing-here")
    assert reply.status_code == 404 and "/api/openapi.json" in reply.json()["message"]
    async with h.client() as client:
        wrong_method = await client.get("/v1/track")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"


# -- JSON bodies of the retry endpoints --------------------------------------------------

RETRY_PATHS = ["/api/deliveries/retry", "/api/quarantine/retry"]


def nested(levels: int) -> bytes:
    """A JSON object `levels` deep (itself the first), its innermost a list."""
    return b'{"ids": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


def test_retry_bodies_too_deep_or_too_large_are_400_and_413_over_real_http(tmp_path: Path) -> None:
    """They were read by a recursive decoder: a body nested 32,000 deep was a 500."""
    service, _ = make_service(tmp_path, Clock())
    app = make_app(service, Metrics(), io.StringIO())
    with live_server(service, app) as url, httpx.Client(base_url=url, headers=ADMIN, timeout=10) as client:
        for path in RETRY_PATHS:
            deep = client.post(path, content=b"[" * 32_000 + b"]" * 32_000)
            assert deep.status_code == 400, (path, deep.text)
            assert deep.json()["code"] == "bad_json" and "nested deeper than 64 levels" in deep.json()["message"]
            huge = client.post(path, content=b"[" * 100_000 + b"]" * 100_000)
            assert huge.status_code == 413 and "larger than 64 KB" in huge.json()["message"], (path, huge.text)
            assert client.post(path, json={"all": True}).status_code == 200


@pytest.mark.parametrize("path", RETRY_PATHS)
@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{", 400, "the body is not JSON"),
        (nested(65), 400, "the body is nested deeper than 64 levels"),
        (nested(64), 400, "send {"),  # as deep as may be: read, then refused for its shape
        (b'{"all": true}' + b" " * (64 * 1024 - 13), 200, ""),  # exactly the limit
        (b'{"all": true}' + b" " * (64 * 1024 - 12), 413, "the body is larger than 64 KB (65536 bytes)"),
    ],
    ids=["not JSON", "65 deep", "64 deep", "64 KB", "a byte more"],
)
async def test_a_retry_body_is_held_to_the_size_and_depth_limits(
    h: Harness, path: str, body: bytes, status: int, says: str
) -> None:
    async with h.client() as client:
        reply = await client.post(path, content=body, headers=ADMIN)
        assert reply.status_code == status, reply.text
        assert says in reply.text
        if status == 400:
            assert reply.json()["code"] == ("bad_body" if body == nested(64) else "bad_json")

        async def chunks() -> Any:  # no Content-Length: the limit holds as the body streams in
            for _ in range(65):
                yield b" " * 1024

        streamed = await client.post(path, content=chunks(), headers=ADMIN)
    assert streamed.status_code == 413, streamed.text


@pytest.mark.parametrize(
    ("ids", "status"),
    [([2**63], 400), ([2**64 + 1], 400), ([0], 400), ([-1], 400), ([1] * 1001, 400), ([1] * 1000, 200)],
    ids=["2^63", "past 64 bits", "zero", "negative", "1001 ids", "1000 ids"],
)
async def test_delivery_ids_to_retry_are_held_to_64_bits_and_a_thousand(
    h: Harness, ids: list[int], status: int
) -> None:
    """An id past 64 bits could not be bound in SQL: it was a 500."""
    async with h.client() as client:
        reply = await client.post("/api/deliveries/retry", json={"ids": ids}, headers=ADMIN)
    assert reply.status_code == status, reply.text
    if status == 400:
        assert reply.json()["code"] == "bad_body" and "up to 1000 delivery ids" in reply.json()["message"]
    else:
        assert reply.json() == {"retried": 0}
