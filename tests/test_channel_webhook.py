"""The webhook channel against a local receiver: Standard Webhooks signatures, idempotency, retry classes."""

from __future__ import annotations

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.responses import JSONResponse, PlainTextResponse, Response

from channel_kit import FIRE_ID, Received, StandIn, action, message, ok
from tripwire.actions.webhook import WebhookChannel

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver(server: StandIn) -> StandIn:
    server.requests.clear()
    server.respond = ok
    return server


def channel(http: httpx.AsyncClient, url: str, extra: str = "", allow_private: bool = True) -> WebhookChannel:
    yaml = f"""\
  hook:
    type: webhook
    url: {url}/hooks/tripwire
    secret: ${{HOOK_SECRET}}
    allow_private: {str(allow_private).lower()}
{extra}"""
    return WebhookChannel(action(yaml, "hook", {"HOOK_SECRET": SECRET}), http)


async def test_the_receiver_verifies_the_signature_and_reads_the_fire(
    receiver: StandIn, http: httpx.AsyncClient
) -> None:
    hook = channel(http, receiver.url)
    outcome = await hook.attempt(message(hook.action, traits={"plan": "pro"}))
    assert outcome.ok and outcome.status == 200
    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/hooks/tripwire"
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert payload == {
        "type": "tripwire.fire",
        "fire": message(hook.action).fire,
        "user": {"id": "u1", "traits": {"plan": "pro"}},
    }
    assert request.headers["idempotency-key"] == FIRE_ID
    assert request.headers["webhook-id"] == FIRE_ID
    assert request.headers["content-type"] == "application/json"
    # a tampered body or another secret fails verification
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body.replace(b"pro", b"max"), request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(request.body, request.headers)


async def test_every_attempt_carries_the_same_idempotency_key(receiver: StandIn, http: httpx.AsyncClient) -> None:
    hook = channel(http, receiver.url)
    for attempt in (1, 2):
        assert (await hook.attempt(message(hook.action))).ok, attempt
    keys = {(r.headers["idempotency-key"], r.headers["webhook-id"]) for r in receiver.requests}
    assert keys == {(FIRE_ID, FIRE_ID)}


async def test_a_body_template_and_header_templates(receiver: StandIn, http: httpx.AsyncClient) -> None:
    extra = """\
    method: PUT
    headers: {X-User: "{{ user.id }}"}
    body: |
      {"user": {{ user.id | tojson }}, "sku": {{ events[0].properties.sku | tojson }}, "fire": "{{ fire.fire_id }}"}
"""
    hook = channel(http, receiver.url, extra)
    assert (await hook.attempt(message(hook.action))).ok
    [request] = receiver.requests
    assert request.method == "PUT"
    assert request.json() == {"user": "u1", "sku": "A-1", "fire": FIRE_ID}
    assert request.headers["x-user"] == "u1"
    Webhook(SECRET).verify(request.body, request.headers)


async def test_a_body_template_that_renders_no_json_fails_for_good(receiver: StandIn, http: httpx.AsyncClient) -> None:
    hook = channel(http, receiver.url, '    body: "user {{ user.id }}"\n')
    outcome = await hook.attempt(message(hook.action))
    assert not outcome.ok and outcome.permanent
    assert "did not render JSON" in (outcome.error or "")
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("retry_after", "expected"), [("7", 7.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), (None, None)]
)
async def test_a_server_error_is_retried_when_the_receiver_says(
    receiver: StandIn, http: httpx.AsyncClient, retry_after: str | None, expected: float | None
) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    receiver.respond = lambda _r: PlainTextResponse("overloaded", status_code=500, headers=headers)
    hook = channel(http, receiver.url)
    outcome = await hook.attempt(message(hook.action))
    assert not outcome.ok and not outcome.permanent
    assert outcome.status == 500 and outcome.retry_after == expected
    assert "HTTP 500" in (outcome.error or "") and "overloaded" in (outcome.error or "")


@pytest.mark.parametrize("status", [429, 503])
async def test_throttling_and_unavailability_are_retried(
    receiver: StandIn, http: httpx.AsyncClient, status: int
) -> None:
    receiver.respond = lambda _r: Response(status_code=status, headers={"Retry-After": "30"})
    hook = channel(http, receiver.url)
    outcome = await hook.attempt(message(hook.action))
    assert not outcome.permanent and outcome.retry_after == 30.0 and outcome.status == status


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_a_client_error_is_permanent(receiver: StandIn, http: httpx.AsyncClient, status: int) -> None:
    receiver.respond = lambda _r: JSONResponse({"error": "bad signature"}, status_code=status)
    hook = channel(http, receiver.url)
    outcome = await hook.attempt(message(hook.action))
    assert not outcome.ok and outcome.permanent and outcome.status == status
    assert "bad signature" in (outcome.error or "")


async def test_a_private_destination_is_refused_unless_allowed(
    receiver: StandIn, guarded_http: httpx.AsyncClient
) -> None:
    hook = channel(guarded_http, receiver.url, allow_private=False)
    outcome = await hook.attempt(message(hook.action))
    assert not outcome.ok and outcome.permanent
    assert "127.0.0.1" in (outcome.error or "") and "allow_private: true" in (outcome.error or "")
    localhost = channel(guarded_http, receiver.url.replace("127.0.0.1", "localhost"), allow_private=False)
    assert (await localhost.attempt(message(localhost.action))).permanent
    assert receiver.requests == []


async def test_a_slow_receiver_times_out_and_is_retried(receiver: StandIn, http: httpx.AsyncClient) -> None:
    import asyncio

    async def slow(_request: Received) -> Response:
        await asyncio.sleep(0.5)
        return Response()

    receiver.respond = slow
    hook = channel(http, receiver.url, "    timeout: 100ms\n")
    outcome = await hook.attempt(message(hook.action))
    assert not outcome.ok and not outcome.permanent
    assert (outcome.error or "").startswith("timed out after 0.1s")


async def test_an_unreachable_receiver_is_retried(http: httpx.AsyncClient) -> None:
    from channel_kit import free_port

    hook = channel(http, f"http://127.0.0.1:{free_port()}")
    outcome = await hook.attempt(message(hook.action))
    assert not outcome.ok and not outcome.permanent and "ConnectError" in (outcome.error or "")


async def test_the_signature_as_docs_actions_md_explains_it(receiver: StandIn, http: httpx.AsyncClient) -> None:
    """HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the base64-decoded secret."""
    import base64
    import hashlib
    import hmac

    hook = channel(http, receiver.url)
    assert (await hook.attempt(message(hook.action))).ok
    [request] = receiver.requests
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
