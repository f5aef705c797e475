"""The n8n channel against a local stand-in for an n8n Webhook node."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest
from starlette.responses import JSONResponse, Response

from channel_kit import FIRE_ID, Received, StandIn, action, message
from tripwire.actions.n8n import N8nChannel

WEBHOOK = "/webhook/6f1c7a52-0d3e-4b8e-9a51-3c2f0e7d9b14"


def n8n(request: Received) -> Response:
    """An active workflow whose Webhook node answers at once; every other path is not registered."""
    if request.path != WEBHOOK:
        return JSONResponse(
            {"code": 404, "message": f'The requested webhook "{request.method} {request.path[9:]}" is not registered.'},
            status_code=404,
        )
    return JSONResponse({"message": "Workflow was started"})


@pytest.fixture
def receiver(server: StandIn) -> StandIn:
    server.requests.clear()
    server.respond = n8n
    return server


def channel(http: httpx.AsyncClient, url: str, extra: str = "") -> N8nChannel:
    yaml = f"""\
  workflow:
    type: n8n
    url: {url}
    allow_private: true
{extra}"""
    return N8nChannel(action(yaml, "workflow"), http)


async def test_the_fire_is_posted_with_its_idempotency_key(receiver: StandIn, http: httpx.AsyncClient) -> None:
    workflow = channel(http, receiver.url + WEBHOOK, '    headers: {X-Tenant: "{{ user.traits.tenant }}"}\n')
    sent = message(workflow.action, traits={"tenant": "acme"})
    outcome = await workflow.attempt(sent)
    assert outcome.ok and outcome.status == 200
    [request] = receiver.requests
    assert request.method == "POST"
    assert request.headers["idempotency-key"] == FIRE_ID
    assert request.headers["x-tenant"] == "acme"
    assert request.json() == {"type": "tripwire.fire", "fire": sent.fire, "user": sent.user, "events": sent.events}


async def test_a_get_webhook_receives_the_fire_in_the_query(receiver: StandIn, http: httpx.AsyncClient) -> None:
    workflow = channel(http, receiver.url + WEBHOOK, "    method: GET\n")
    assert (await workflow.attempt(message(workflow.action))).ok
    [request] = receiver.requests
    assert request.method == "GET" and request.body == b""
    assert parse_qs(request.query) == {
        "fire_id": [FIRE_ID], "trigger": ["cart_abandonment"], "user_id": ["u1"],
        "fire_time": ["2026-03-01T12:00:00.000Z"],
    }  # fmt: skip
    assert request.headers["idempotency-key"] == FIRE_ID


async def test_an_inactive_workflow_fails_for_good_with_a_hint(receiver: StandIn, http: httpx.AsyncClient) -> None:
    workflow = channel(http, receiver.url + "/webhook-test/6f1c7a52")
    outcome = await workflow.attempt(message(workflow.action))
    assert outcome.permanent and outcome.status == 404
    assert "is not registered" in (outcome.error or "") and "is the workflow active?" in (outcome.error or "")


async def test_an_n8n_outage_is_retried(receiver: StandIn, http: httpx.AsyncClient) -> None:
    receiver.respond = lambda _r: JSONResponse({"message": "Service Unavailable"}, status_code=503)
    workflow = channel(http, receiver.url + WEBHOOK)
    outcome = await workflow.attempt(message(workflow.action))
    assert not outcome.ok and not outcome.permanent and outcome.status == 503
