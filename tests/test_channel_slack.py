"""The Slack channel against a local stand-in for Slack's incoming webhooks."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.responses import PlainTextResponse, Response

from channel_kit import Received, StandIn, action, message
from tripwire.actions.slack import SlackChannel

HOOK_PATH = "/services/T0001/B0001/abcdefghijklmnopqrstuvwx"


def slack(request: Received) -> Response:
    """Slack's incoming webhook: "ok", or a plain-text error code."""
    if request.path != HOOK_PATH:
        return PlainTextResponse("no_service", status_code=404)
    if request.headers.get("content-type") != "application/json":
        return PlainTextResponse("invalid_payload", status_code=400)
    try:
        text = json.loads(request.body)["text"]
    except (ValueError, KeyError):
        return PlainTextResponse("invalid_payload", status_code=400)
    return PlainTextResponse("ok") if text else PlainTextResponse("no_text", status_code=400)


@pytest.fixture
def receiver(server: StandIn) -> StandIn:
    server.requests.clear()
    server.respond = slack
    return server


TEXT = "*{{ user.traits.name }}* left {{ events[0].properties.sku }}"


def channel(http: httpx.AsyncClient, url: str, text: str = TEXT) -> SlackChannel:
    yaml = f"""\
  notify:
    type: slack
    url: {url}
    text: "{text}"
    allow_private: true
"""
    return SlackChannel(action(yaml, "notify"), http)


async def test_the_text_is_posted_to_the_webhook(receiver: StandIn, http: httpx.AsyncClient) -> None:
    notify = channel(http, receiver.url + HOOK_PATH)
    outcome = await notify.attempt(message(notify.action, traits={"name": "Ada"}))
    assert outcome.ok and outcome.status == 200
    [request] = receiver.requests
    assert request.method == "POST"
    assert request.json() == {"text": "*Ada* left A-1"}


async def test_an_empty_text_fails_for_good_before_sending(receiver: StandIn, http: httpx.AsyncClient) -> None:
    notify = channel(http, receiver.url + HOOK_PATH, text="{{ user.traits.note | default('') }}")
    outcome = await notify.attempt(message(notify.action))
    assert outcome.permanent and "rendered nothing" in (outcome.error or "")
    assert receiver.requests == []


async def test_a_revoked_webhook_fails_for_good(receiver: StandIn, http: httpx.AsyncClient) -> None:
    notify = channel(http, receiver.url + "/services/T0001/B0001/revoked")
    outcome = await notify.attempt(message(notify.action, traits={"name": "Ada"}))
    assert outcome.permanent and outcome.status == 404
    assert "no_service" in (outcome.error or "") and "make a new one in Slack" in (outcome.error or "")


async def test_rate_limited_posts_are_retried_after_slack_says(receiver: StandIn, http: httpx.AsyncClient) -> None:
    receiver.respond = lambda _r: PlainTextResponse("rate_limited", status_code=429, headers={"Retry-After": "12"})
    notify = channel(http, receiver.url + HOOK_PATH)
    outcome = await notify.attempt(message(notify.action, traits={"name": "Ada"}))
    assert not outcome.permanent and outcome.retry_after == 12.0


async def test_a_missing_variable_is_a_template_failure(receiver: StandIn, http: httpx.AsyncClient) -> None:
    notify = channel(http, receiver.url + HOOK_PATH, text="{{ user.traits.name }}")
    outcome = await notify.attempt(message(notify.action, traits={}))
    assert outcome.permanent and (outcome.error or "").startswith("template text: ")
    assert receiver.requests == []
