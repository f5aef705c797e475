"""Hostile input against a live `tripwire serve` (real HTTP, the example shop rules): every
poison case of issue 7 that reaches the edge as a regression test, then a fuzzer of
structure-aware hostile JSON mixed with good events in batches.

The properties: every answer is 2xx or 4xx (or 429/503 with Retry-After); every good event
beside a bad one is stored and applied (a fresh shopper's identify and purchase over 500
give a vip_purchase fire); and afterwards the server still takes and fires good events.
See docs/server.md, "Limits and bad input". Events stamped ahead of the wall clock within
the future limit are left to the watermark's own tests.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serverproc import ServerProcess
from tripwire.server.auth import Secret
from tripwire.server.inbox import user_token
from tripwire.timestamps import format_ms

ROOT = Path(__file__).resolve().parent.parent
SHOP_RULES = ROOT / "examples" / "shop" / "rules.yaml"
INBOX_SECRET = "hostile-inbox-secret-4d3c2b1a"
FIRE_WAIT = 30.0  # seconds: a purchase fires once the watermark (5 s behind the wall clock) passes it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("hostile")
    with ServerProcess(SHOP_RULES, folder / "data", env={"TRIPWIRE_INBOX_SECRET": INBOX_SECRET}) as running:
        yield running
    assert not running.running(), "the server did not stop"


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, auth=server.write_auth, timeout=10, trust_env=False) as client:
        yield client


def now_iso() -> str:
    return format_ms(int(time.time() * 1000))


def shopper() -> str:
    return f"good-{uuid.uuid4().hex[:12]}"


def good_pair(user: str) -> list[dict[str, Any]]:
    """An identify with an email, then a purchase over 500: vip_purchase fires for `user`."""
    stamp = int(time.time() * 1000)
    return [
        {"type": "identify", "userId": user, "traits": {"email": f"{user}@example.com"},
         "messageId": f"{user}-identify", "timestamp": format_ms(stamp)},
        {"type": "track", "event": "purchase", "userId": user, "properties": {"total": 600},
         "messageId": f"{user}-purchase", "timestamp": format_ms(stamp + 1)},
    ]  # fmt: skip


def answered_well(reply: httpx.Response) -> None:
    """2xx or 4xx, or 429/503 with Retry-After; never a 500."""
    code = reply.status_code
    assert 200 <= code < 500, f"{code}: {reply.text[:500]}"
    if code in (429, 503):
        assert reply.headers.get("retry-after"), "a 429/503 without Retry-After"


def stored(server: ServerProcess, user: str) -> set[str]:
    with httpx.Client(timeout=10, trust_env=False) as client:
        reply = client.get(server.url("/api/events"), params={"user": user}, headers=server.admin_headers)
    assert reply.status_code == 200, reply.text
    return {e["message_id"] for e in reply.json()["events"]}


def vip_fires(server: ServerProcess, users: list[str], timeout: float = FIRE_WAIT) -> dict[str, Any]:
    """Each user's vip_purchase fire, waiting until every one has fired (or the time is up)."""
    found: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=10, trust_env=False) as client:
        while True:
            for user in users:
                if user in found:
                    continue
                reply = client.get(server.url("/api/fires"), params={"user": user}, headers=server.admin_headers)
                assert reply.status_code == 200, reply.text
                fires = [f for f in reply.json()["fires"] if f["trigger"] == "vip_purchase"]
                if fires:
                    found[user] = fires[0]
            if len(found) == len(users) or time.monotonic() > deadline:
                return found
            time.sleep(0.25)


def assert_fires_for(server: ServerProcess, users: list[str]) -> None:
    fires = vip_fires(server, users)
    missing = [u for u in users if u not in fires]
    assert not missing, f"no vip_purchase fire for {missing}:\n{server.log_tail()}"
    suppressed = {u: f["suppressed"] for u, f in fires.items() if f["suppressed"] is not None}
    assert not suppressed, suppressed


def post_raw(http: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": "application/json"})


def batch_body(items: list[bytes]) -> bytes:
    return b'{"batch": [' + b", ".join(items) + b'], "sentAt": "' + now_iso().encode() + b'"}'


def encoded(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def deep_text(levels: int, leaf: bytes = b"1") -> bytes:
    return b'{"a": ' * levels + leaf + b"}" * levels


# -- the poison cases, one by one ----------------------------------------------------------


def test_a_trait_past_64_bits_is_400_naming_it_and_ingest_goes_on(server: ServerProcess, http: httpx.Client) -> None:
    """Issue 7 item 1: this identify was accepted and then stopped every write for good."""
    poison = b'{"userId": "p", "traits": {"n": 18446744073709551616}}'
    reply = post_raw(http, "/v1/identify", poison)
    assert reply.status_code == 400, reply.text
    [error] = reply.json()["errors"]
    assert error["field"] == "traits.n" and "64-bit" in error["message"]
    user = shopper()
    batch = [encoded(e) for e in good_pair(user)] + [b'{"type": "identify", "userId": "p2", "traits": {"n": -1e400}}']
    reply = post_raw(http, "/v1/batch", batch_body(batch))
    assert reply.status_code == 200, reply.text
    assert [(e["index"], e["field"]) for e in reply.json()["errors"]] == [(2, "traits.n")]
    assert stored(server, user) == {f"{user}-identify", f"{user}-purchase"}
    for _ in range(3):  # later requests are still taken
        assert http.post("/v1/track", json={"userId": "after", "event": "x"}).status_code == 200
    assert_fires_for(server, [user])


def test_nesting_1100_deep_is_named_and_its_batch_neighbours_are_kept(
    server: ServerProcess, http: httpx.Client
) -> None:
    """Issue 7 item 3: a RecursionError (500) lost the whole batch."""
    user = shopper()
    far = b'{"userId": "deep", "event": "x", "properties": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    mid = b'{"userId": "deep", "event": "x", "properties": ' + deep_text(100) + b"}"
    items = [far, *(encoded(e) for e in good_pair(user)), mid]
    reply = post_raw(http, "/v1/batch", batch_body(items))
    assert reply.status_code == 200, reply.text
    errors = reply.json()["errors"]
    assert [e["index"] for e in errors] == [0, 3]
    assert errors[0]["field"].startswith("properties[0][0]") and "nested" in errors[0]["message"]
    assert errors[1]["field"].startswith("properties.a.a") and "deeper than 64" in errors[1]["message"]
    assert stored(server, user) == {f"{user}-identify", f"{user}-purchase"}
    single = post_raw(http, "/v1/track", far)
    assert single.status_code == 400 and single.json()["field"].startswith("properties[0]")
    assert_fires_for(server, [user])


@pytest.mark.parametrize(
    ("timestamp", "sent_at", "field"),
    [
        ("0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z", "timestamp"),
        ("9999-12-31T23:59:59.999Z", "0001-01-01T00:00:00.000Z", "sentAt"),
        ("1970-01-01T00:00:00.000Z", "9999-12-31T00:00:00.000Z", "timestamp"),  # each in range, not once corrected
        ("0001-01-01T00:00:00.000Z", None, "timestamp"),
        ("9999-12-31T23:59:59.999Z", None, "timestamp"),
        ("10000-01-01T00:00:00Z", None, "timestamp"),
        ("2026-03-01T12:00:00.000Z", "0000-01-01T00:00:00Z", "sentAt"),
    ],
)
def test_times_outside_1970_to_9999_are_400_even_after_the_skew_arithmetic(
    http: httpx.Client, timestamp: str, sent_at: str | None, field: str
) -> None:
    """Issue 7 item 4: year 1 with a year 9999 sentAt was a 500 (OverflowError)."""
    event = {"userId": "t", "event": "x", "timestamp": timestamp, **({"sentAt": sent_at} if sent_at else {})}
    reply = http.post("/v1/track", json=event)
    assert reply.status_code == 400, reply.text
    assert reply.json()["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("properties", "field", "fragment"),
    [
        ({"s": "x" * 20_000}, "properties.s", "string of 20000"),
        ({"k" * 5_000: 1}, "properties", "a key of 5000"),
        ({f"k{i}": i for i in range(1_500)}, "properties", "1500 keys"),
        ({"l": [0] * 3_000}, "properties.l", "3000 items"),
        ({"a": {"b": [1, 2, -(2**64)]}}, "properties.a.b[2]", "64-bit"),
    ],
)
def test_huge_strings_keys_and_counts_are_400_naming_the_path(
    http: httpx.Client, properties: dict[str, Any], field: str, fragment: str
) -> None:
    reply = http.post("/v1/track", json={"userId": "big", "event": "x", "properties": properties})
    assert reply.status_code == 400, reply.text
    [error] = reply.json()["errors"]
    assert error["field"] == field and fragment in error["message"]


def inbox_headers(user: str = "inbox-user") -> dict[str, str]:
    return {"X-User-Id": user, "X-User-Token": user_token(Secret(INBOX_SECRET), user)}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "name"),
    [
        ("GET", "/v1/inbox", {"params": {"before": "9" * 40}}, "before"),
        ("GET", "/v1/inbox", {"params": {"limit": "9" * 40}}, "limit"),
        ("POST", "/v1/inbox/read", {"json": {"ids": [10**30]}}, "ids"),
        ("POST", "/v1/inbox/read", {"content": b'{"ids": ' + b"[" * 3000 + b"]" * 3000 + b"}"}, None),
        ("GET", "/v1/inbox/stream", {"params": {"lastEventId": "9" * 40}}, "lastEventId"),
    ],
)
def test_inbox_parameters_past_any_id_are_400_never_500(
    http: httpx.Client, method: str, path: str, kwargs: dict[str, Any], name: str | None
) -> None:
    """Issue 7 item 9: a huge integer in before, ids or lastEventId gave 500 or cut the stream."""
    reply = http.request(method, path, headers=inbox_headers(), **kwargs)
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert name is None or name in (body.get("parameter"), body.get("field"))


def test_a_huge_last_event_id_header_keeps_the_stream_open(http: httpx.Client) -> None:
    headers = inbox_headers() | {"Last-Event-ID": "9" * 40}
    with http.stream("GET", "/v1/inbox/stream", headers=headers) as reply:
        assert reply.status_code == 200
        assert next(reply.iter_lines()) == "retry: 3000"


# -- the fuzzer ------------------------------------------------------------------------------

# Raw JSON texts no encoder would write: literals JSON does not have, numbers past every
# type, lone surrogates, NUL, and values at and past the limits.
RAW_LEAVES = [
    b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400", b"-0", b"0.1",
    b"18446744073709551616", b"-9223372036854775809", b"9223372036854775807", b"9" * 400,
    b'"\\ud800"', b'"\\udfff"', b'"a\\udc00b"', b'"\\ud83d\\ude00"', b'"\\u0000"', b'"a\\u0000b"',
    b'"\\u202e\\ufeff\\uffff"', b'"\xc3\xa9"', b"true", b"null", b"[]", b"{}",
    b'"' + b"x" * 17_000 + b'"',
]  # fmt: skip
NOT_TIMES = [
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999-23:59", "10000-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z", "2026-02-30T00:00:00Z", "2026-03-01T24:00:00Z", "yesterday", "", "T", "\u0000",
    "2026-03-01T12:00:00.123456789012Z", "2026-03-01T12:00:00.\u0663\u0663\u0663Z", "2026-03-01T12:00:60.000Z",
]  # fmt: skip
PAST_TIMES = ["1970-01-01T00:00:00.000Z", "2000-01-01T00:00:00Z", "2026-01-01T00:00:00+05:00"]
# Stamped ahead of the wall clock within the future limit is left out (see the docstring):
# such a sentAt is only ever malformed or past every bound.
NOT_SENT_AT = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "x", ""]

text_values = st.text(st.characters(codec=None, exclude_categories=()), max_size=8).map(
    lambda s: json.dumps(s).encode()  # lone surrogates come out as \\udxxx escapes
)
leaves = st.sampled_from(RAW_LEAVES) | text_values | st.integers(-(2**70), 2**70).map(lambda n: str(n).encode())


@st.composite
def raw_values(draw: st.DrawFn, depth: int = 0) -> bytes:
    kind = draw(st.sampled_from(["leaf", "leaf", "list", "object", "duplicates", "deep"]) if depth < 3 else leaves)
    if isinstance(kind, bytes):
        return kind
    if kind == "leaf":
        return draw(leaves)
    if kind == "deep":
        levels = draw(st.sampled_from([9, 10, 63, 64, 65, 1100, 5000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"k": ', b"}")]))
        return opener * levels + draw(leaves) + closer * levels
    children = draw(st.lists(raw_values(depth + 1), max_size=3))
    if kind == "list":
        return b"[" + b", ".join(children) + b"]"
    keys = draw(st.lists(text_values, min_size=len(children), max_size=len(children)))
    if kind == "duplicates" and children:
        keys = [keys[0]] * len(children)  # the same key again and again
    return b"{" + b", ".join(k + b": " + v for k, v in zip(keys, children, strict=True)) + b"}"


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


FIELD_VALUES: dict[str, st.SearchStrategy[bytes]] = {
    "type": st.sampled_from(["track", "identify", "page", "alias", "group", "screen", "purchase"]).map(as_json),
    "event": st.sampled_from(["purchase", "x", ""]).map(as_json),
    "userId": st.sampled_from(["hostile", "h-\u0000", "h-\u00e9"]).map(as_json) | text_values,
    "anonymousId": st.sampled_from(["anon"]).map(as_json),
    "previousId": st.sampled_from(["hostile", ""]).map(as_json),
    "messageId": st.sampled_from(["m", ""]).map(as_json),
    "timestamp": st.sampled_from(NOT_TIMES + PAST_TIMES).map(as_json),
    "originalTimestamp": st.sampled_from(NOT_TIMES + PAST_TIMES).map(as_json),
    "sentAt": st.sampled_from(NOT_SENT_AT).map(as_json),
    "properties": st.just(b'{"total": 900}'),
    "traits": st.just(b'{"email": "h@example.com"}'),
    "context": st.just(b'{"ip": "127.0.0.1"}'),
}


@st.composite
def hostile_events(draw: st.DrawFn) -> bytes:
    """An event object's text whose every field may be missing, right, of the wrong type or hostile."""
    fields = draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), unique=True, max_size=len(FIELD_VALUES)))
    members: list[bytes] = []
    for field in fields:
        # The right kind of value, or the wrong type or hostile content.
        value = draw(FIELD_VALUES[field]) if draw(st.booleans()) else draw(raw_values())
        members.append(as_json(field) + b": " + value)
    if draw(st.booleans()):
        members.append(b'"userId": "hostile"')  # a duplicate key, when userId was drawn too
    if draw(st.integers(0, 9)) == 0:
        return draw(raw_values())  # not even an object
    return b"{" + b", ".join(members) + b"}"


GOOD_USERS: list[str] = []


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(
    hostile=st.lists(hostile_events(), min_size=1, max_size=5),
    at=st.integers(0, 5),
    single=hostile_events(),
    endpoint=st.sampled_from(["track", "identify", "page", "alias", "group"]),
)
def test_hostile_batches_never_stop_or_lose_good_events(
    server: ServerProcess, http: httpx.Client, hostile: list[bytes], at: int, single: bytes, endpoint: str
) -> None:
    user = shopper()
    good = [encoded(e) for e in good_pair(user)]
    place = min(at, len(hostile))
    items = hostile[:place] + good + hostile[place:]
    reply = post_raw(http, "/v1/batch", batch_body(items))
    answered_well(reply)
    assert reply.status_code == 200, reply.text[:1000]
    bad_indexes = {e["index"] for e in reply.json().get("errors", [])}
    assert not bad_indexes & {place, place + 1}, reply.json()["errors"]
    GOOD_USERS.append(user)
    answered_well(post_raw(http, f"/v1/{endpoint}", single))


def test_after_the_fuzzer_every_good_event_was_stored_and_applied(server: ServerProcess, http: httpx.Client) -> None:
    """Runs after the fuzzer (file order): its good shoppers all fired, and new ones still do."""
    assert len(GOOD_USERS) >= 100, "the fuzzer did not run first"
    for user in GOOD_USERS:
        assert stored(server, user) == {f"{user}-identify", f"{user}-purchase"}, user
    fresh = shopper()
    reply = http.post("/v1/batch", json={"batch": good_pair(fresh), "sentAt": now_iso()})
    assert reply.status_code == 200 and reply.json() == {"success": True}
    assert_fires_for(server, [*GOOD_USERS, fresh])
    assert http.get("/readyz").status_code == 200
