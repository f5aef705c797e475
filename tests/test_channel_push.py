"""The push channel against local stand-ins: a Web Push service that checks VAPID and decrypts
the payload with the subscription's keys, and Google's token endpoint plus FCM's HTTP v1 API."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import http_ece
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.responses import JSONResponse, Response

from channel_kit import FIRE_ID, Received, StandIn, action, message
from tripwire.actions.push import PushChannel
from tripwire.actions.service_account import FCM_SCOPE, GRANT_TYPE, TokenCache


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# -- Web Push -------------------------------------------------------------------------------


@dataclass
class PushService:
    """A push service: checks the VAPID JWT and the encoding, decrypts like the browser would."""

    origin: str
    vapid_key: ec.EllipticCurvePrivateKey
    browser_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    delivered: list[dict[str, Any]] = field(default_factory=list)
    gone: bool = False

    def __call__(self, request: Received) -> Response:
        if self.gone:
            return Response("push subscription has unsubscribed or expired", status_code=410)
        scheme, _, params = request.headers.get("authorization", "").partition(" ")
        fields = dict(part.split("=", 1) for part in params.split(","))
        public = raw_public(self.vapid_key)
        assert scheme == "vapid" and fields["k"] == b64url(public)
        signer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
        claims = jwt.decode(fields["t"], signer, algorithms=["ES256"], audience=self.origin)
        assert claims["sub"] == "mailto:ops@shop.example" and claims["exp"] > time.time()
        assert request.headers["content-encoding"] == "aes128gcm"
        plain = http_ece.decrypt(
            request.body, private_key=self.browser_key, auth_secret=self.auth_secret, version="aes128gcm"
        )
        self.delivered.append({"payload": json.loads(plain), "headers": request.headers})
        return Response(status_code=201, headers={"Location": f"{self.origin}/m/1"})


@pytest.fixture
def push_service(server: StandIn) -> PushService:
    server.requests.clear()
    vapid = ec.generate_private_key(ec.SECP256R1())
    service = PushService(server.url, vapid, ec.generate_private_key(ec.SECP256R1()), os.urandom(16))
    server.respond = service
    return service


def subscription(service: PushService, path: str = "/push/v2/gAAAAABk") -> dict[str, Any]:
    return {
        "endpoint": service.origin + path,
        "expirationTime": None,
        "keys": {"p256dh": b64url(raw_public(service.browser_key)), "auth": b64url(service.auth_secret)},
    }


def webpush(
    http: httpx.AsyncClient, service: PushService, extra: str = "", key: str | None = None, allow_private: bool = True
) -> PushChannel:
    yaml = f"""\
  push:
    type: push
    provider: webpush
    vapid_private_key: ${{VAPID_KEY}}
    vapid_subject: mailto:ops@shop.example
    title: "{{{{ user.traits.name }}}}, still thinking it over?"
    body: "{{{{ events[0].properties.sku }}}} is waiting in your cart"
    url: "https://shop.example/cart?sku={{{{ events[0].properties.sku }}}}"
    data: {{sku: "{{{{ events[0].properties.sku }}}}"}}
    ttl: 2h
    allow_private: {str(allow_private).lower()}
{extra}"""
    vapid_key = key if key is not None else pem(service.vapid_key)
    return PushChannel(action(yaml, "push", {"VAPID_KEY": vapid_key}), http)


async def test_the_push_service_decrypts_the_notification(push_service: PushService, http: httpx.AsyncClient) -> None:
    push = webpush(http, push_service)
    traits = {"name": "Ada", "push_subscription": subscription(push_service)}
    outcome = await push.attempt(message(push.action, traits=traits))
    assert outcome.ok and outcome.status == 201, outcome.error
    [delivered] = push_service.delivered
    assert delivered["payload"] == {
        "title": "Ada, still thinking it over?",
        "body": "A-1 is waiting in your cart",
        "url": "https://shop.example/cart?sku=A-1",
        "tag": FIRE_ID,
        "data": {"sku": "A-1", "fire_id": FIRE_ID},
    }
    headers = delivered["headers"]
    assert headers["ttl"] == "7200" and headers["topic"] == FIRE_ID and headers["urgency"] == "normal"
    assert outcome.detail["location"] == push_service.origin + "/m/1"


async def test_a_raw_vapid_key_and_a_subscription_kept_as_a_json_string(
    push_service: PushService, http: httpx.AsyncClient
) -> None:
    raw = push_service.vapid_key.private_numbers().private_value.to_bytes(32, "big")
    push = webpush(http, push_service, key=b64url(raw))
    traits = {"name": "Bo", "push_subscription": json.dumps(subscription(push_service))}
    outcome = await push.attempt(message(push.action, traits=traits))
    assert outcome.ok, outcome.error
    assert push_service.delivered[0]["payload"]["title"] == "Bo, still thinking it over?"


async def test_a_subscription_from_a_template(push_service: PushService, http: httpx.AsyncClient) -> None:
    push = webpush(http, push_service, "    subscription: '{{ user.traits.devices.web | tojson }}'\n")
    traits = {"name": "Cy", "devices": {"web": subscription(push_service)}}
    assert (await push.attempt(message(push.action, traits=traits))).ok
    assert len(push_service.delivered) == 1


@pytest.mark.parametrize("status", [404, 410])
async def test_a_subscription_that_is_gone_fails_for_good(
    server: StandIn, push_service: PushService, http: httpx.AsyncClient, status: int
) -> None:
    server.respond = lambda _r: Response("Subscription not found", status_code=status)
    push = webpush(http, push_service)
    outcome = await push.attempt(
        message(push.action, traits={"name": "Ada", "push_subscription": subscription(push_service)})
    )
    assert outcome.permanent and outcome.status == status
    assert "the push subscription is gone" in (outcome.error or "") and "remove it" in (outcome.error or "")


async def test_a_throttled_push_is_retried(server: StandIn, push_service: PushService, http: httpx.AsyncClient) -> None:
    server.respond = lambda _r: Response(status_code=429, headers={"Retry-After": "60"})
    push = webpush(http, push_service)
    outcome = await push.attempt(
        message(push.action, traits={"name": "Ada", "push_subscription": subscription(push_service)})
    )
    assert not outcome.permanent and outcome.retry_after == 60.0


async def test_a_user_without_a_subscription_fails_for_good(push_service: PushService, http: httpx.AsyncClient) -> None:
    push = webpush(http, push_service)
    outcome = await push.attempt(message(push.action, traits={"name": "Ada"}))
    assert outcome.permanent
    assert (outcome.error or "").startswith("user 'u1' has no push_subscription trait")


async def test_a_subscription_without_keys_fails_for_good(push_service: PushService, http: httpx.AsyncClient) -> None:
    push = webpush(http, push_service)
    broken = {"endpoint": push_service.origin + "/push/x"}
    outcome = await push.attempt(message(push.action, traits={"name": "Ada", "push_subscription": broken}))
    assert outcome.permanent and "p256dh" in (outcome.error or "")


async def test_a_private_push_endpoint_is_refused_unless_allowed(
    server: StandIn, push_service: PushService, guarded_http: httpx.AsyncClient
) -> None:
    guarded = webpush(guarded_http, push_service, allow_private=False)
    traits = {"name": "Ada", "push_subscription": subscription(push_service)}
    outcome = await guarded.attempt(message(guarded.action, traits=traits))
    assert outcome.permanent and "allow_private: true" in (outcome.error or "")
    assert server.requests == []


# -- Firebase Cloud Messaging ------------------------------------------------------------------


@dataclass
class Google:
    """Google's OAuth2 token endpoint (JWT bearer grant) and FCM's messages:send, on one stand-in."""

    origin: str
    account_key: rsa.RSAPrivateKey
    clock: Callable[[], float] = time.time
    tokens_issued: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    unregistered: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)

    @property
    def account(self) -> dict[str, str]:
        return {
            "type": "service_account",
            "project_id": "shop-123",
            "private_key_id": "key-1",
            "private_key": pem(self.account_key),
            "client_email": "tripwire@shop-123.iam.gserviceaccount.com",
            "client_id": "1234567890",
            "token_uri": f"{self.origin}/token",
        }

    def __call__(self, request: Received) -> Response:
        if request.path == "/token":
            return self.token(request)
        if request.path == "/v1/projects/shop-123/messages:send":
            return self.send(request)
        return JSONResponse({"error": {"code": 404, "status": "NOT_FOUND", "message": "no such path"}}, 404)

    def token(self, request: Received) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        assert form["grant_type"] == GRANT_TYPE
        assert jwt.get_unverified_header(form["assertion"])["kid"] == "key-1"
        try:
            claims = jwt.decode(
                form["assertion"],
                self.account_key.public_key(),
                algorithms=["RS256"],
                audience=f"{self.origin}/token",
                options={"verify_exp": False, "verify_iat": False},  # checked below against the test's clock
            )
        except jwt.PyJWTError as exc:
            return JSONResponse({"error": "invalid_grant", "error_description": str(exc)}, 400)
        assert claims["iss"] == "tripwire@shop-123.iam.gserviceaccount.com" and claims["scope"] == FCM_SCOPE
        assert abs(claims["iat"] - self.clock()) < 5 and claims["exp"] - claims["iat"] == 3600
        self.tokens_issued += 1
        return JSONResponse(
            {"access_token": f"ya29.token-{self.tokens_issued}", "expires_in": 3599, "token_type": "Bearer"}
        )

    def send(self, request: Received) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not token.startswith("ya29.") or token in self.revoked:
            error = {
                "code": 401,
                "status": "UNAUTHENTICATED",
                "message": "Request had invalid authentication credentials.",
            }
            return JSONResponse({"error": error}, 401)
        body = request.json()
        device = body["message"]["token"]
        if device in self.unregistered:
            detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}
            error = {
                "code": 404,
                "status": "NOT_FOUND",
                "message": "Requested entity was not found.",
                "details": [detail],
            }
            return JSONResponse({"error": error}, 404)
        self.sent.append({"body": body, "token": token})
        return JSONResponse({"name": f"projects/shop-123/messages/0:{len(self.sent)}"})


@pytest.fixture(scope="module")
def account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def google(server: StandIn, account_key: rsa.RSAPrivateKey) -> Google:
    server.requests.clear()
    fake = Google(server.url, account_key)
    server.respond = fake
    return fake


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def fcm(
    http: httpx.AsyncClient, google: Google, tokens: TokenCache, account: str | None = None, extra: str = ""
) -> PushChannel:
    yaml = f"""\
  push:
    type: push
    provider: fcm
    service_account: ${{FCM_SERVICE_ACCOUNT}}
    endpoint: {google.origin}
    title: "{{{{ user.traits.name }}}}, still thinking it over?"
    body: "{{{{ events[0].properties.sku }}}} is waiting"
    url: https://shop.example/cart
    data: {{sku: "{{{{ events[0].properties.sku }}}}"}}
    ttl: 1h
    allow_private: true
{extra}"""
    config = action(yaml, "push", {"FCM_SERVICE_ACCOUNT": account or json.dumps(google.account)})
    return PushChannel(config, http, tokens=tokens)


async def test_fcm_gets_a_token_and_sends_the_notification(google: Google, http: httpx.AsyncClient) -> None:
    push = fcm(http, google, TokenCache())
    outcome = await push.attempt(message(push.action, traits={"name": "Ada", "fcm_token": "device-1"}))
    assert outcome.ok and outcome.detail == {"name": "projects/shop-123/messages/0:1"}, outcome.error
    [sent] = google.sent
    assert sent["token"] == "ya29.token-1"
    assert sent["body"] == {
        "message": {
            "token": "device-1",
            "notification": {"title": "Ada, still thinking it over?", "body": "A-1 is waiting"},
            "data": {"sku": "A-1", "fire_id": FIRE_ID, "url": "https://shop.example/cart"},
            "android": {"collapse_key": FIRE_ID, "ttl": "3600s"},
            "apns": {"headers": {"apns-collapse-id": FIRE_ID}},
            "webpush": {"headers": {"TTL": "3600", "Topic": FIRE_ID}},
        }
    }


async def test_the_token_is_cached_until_shortly_before_it_expires(google: Google, http: httpx.AsyncClient) -> None:
    clock = Clock()
    google.clock = clock
    tokens = TokenCache(clock)
    push = fcm(http, google, tokens)
    traits = {"name": "Ada", "fcm_token": "device-1"}
    for _ in range(3):
        assert (await push.attempt(message(push.action, traits=traits))).ok
    assert google.tokens_issued == 1
    clock.now += 3599 - 301  # more than five minutes left: still good
    assert (await push.attempt(message(push.action, traits=traits))).ok
    assert google.tokens_issued == 1
    clock.now += 2  # now within five minutes of expiry: renewed
    assert (await push.attempt(message(push.action, traits=traits))).ok
    assert google.tokens_issued == 2
    assert [s["token"] for s in google.sent] == ["ya29.token-1"] * 4 + ["ya29.token-2"]


async def test_a_refused_token_is_dropped_and_the_retry_gets_a_new_one(google: Google, http: httpx.AsyncClient) -> None:
    push = fcm(http, google, TokenCache())
    traits = {"name": "Ada", "fcm_token": "device-1"}
    assert (await push.attempt(message(push.action, traits=traits))).ok
    google.revoked.add("ya29.token-1")
    refused = await push.attempt(message(push.action, traits=traits))
    assert not refused.ok and not refused.permanent and refused.status == 401
    assert (await push.attempt(message(push.action, traits=traits))).ok
    assert google.tokens_issued == 2 and google.sent[-1]["token"] == "ya29.token-2"


async def test_an_unregistered_device_fails_for_good(google: Google, http: httpx.AsyncClient) -> None:
    google.unregistered.add("old-device")
    push = fcm(http, google, TokenCache())
    outcome = await push.attempt(message(push.action, traits={"name": "Ada", "fcm_token": "old-device"}))
    assert outcome.permanent and outcome.status == 404
    assert (outcome.error or "").startswith("FCM 404 UNREGISTERED: Requested entity was not found.")
    assert "remove it from the user's traits" in (outcome.error or "")


async def test_an_fcm_outage_is_retried(server: StandIn, google: Google, http: httpx.AsyncClient) -> None:
    def outage(request: Received) -> Response:
        if request.path == "/token":
            return google(request)
        error = {"code": 503, "status": "UNAVAILABLE", "message": "The service is currently unavailable."}
        return JSONResponse({"error": error}, 503, headers={"Retry-After": "20"})

    server.respond = outage
    push = fcm(http, google, TokenCache())
    outcome = await push.attempt(message(push.action, traits={"name": "Ada", "fcm_token": "device-1"}))
    assert not outcome.permanent and outcome.status == 503 and outcome.retry_after == 20.0
    assert "UNAVAILABLE" in (outcome.error or "")


async def test_the_service_account_from_a_key_file(google: Google, http: httpx.AsyncClient, tmp_path: Path) -> None:
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(google.account))
    push = fcm(http, google, TokenCache(), account=str(path))
    assert (await push.attempt(message(push.action, traits={"name": "Ada", "fcm_token": "device-1"}))).ok


async def test_a_key_the_token_endpoint_refuses_fails_for_good(google: Google, http: httpx.AsyncClient) -> None:
    impostor = dict(google.account, private_key=pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    push = fcm(http, google, TokenCache(), account=json.dumps(impostor))
    outcome = await push.attempt(message(push.action, traits={"name": "Ada", "fcm_token": "device-1"}))
    assert outcome.permanent and outcome.status == 400 and "invalid_grant" in (outcome.error or "")
    assert google.sent == []


async def test_a_user_without_a_device_token_fails_for_good(google: Google, http: httpx.AsyncClient) -> None:
    push = fcm(http, google, TokenCache())
    outcome = await push.attempt(message(push.action, traits={"name": "Ada"}))
    assert outcome.permanent and (outcome.error or "").startswith("user 'u1' has no fcm_token trait")


async def test_a_service_account_that_is_not_one_fails_for_good(google: Google, http: httpx.AsyncClient) -> None:
    push = fcm(http, google, TokenCache(), account='{"type": "authorized_user"}')
    outcome = await push.attempt(message(push.action, traits={"name": "Ada", "fcm_token": "device-1"}))
    assert outcome.permanent and "is not a service-account key" in (outcome.error or "")


async def test_web_push_end_to_end_from_an_event_sent_to_the_service(
    push_service: PushService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event submitted to the service, the fire, the outbox, the dispatcher, the push service."""
    from test_dispatcher import Clock, start

    monkeypatch.setenv("VAPID_KEY", pem(push_service.vapid_key))
    rules = """
settings: {allowed_lateness: 0s}
actions:
  push: {type: push, provider: webpush, vapid_private_key: "${VAPID_KEY}", vapid_subject: "mailto:ops@shop.example",
         title: "Thanks, {{ user.traits.name }}", body: "Your order is on its way", allow_private: true}
triggers:
  buy: {when: purchase, actions: [push]}
"""
    async with start(tmp_path, rules, Clock(1_772_366_400.0), all_channels=True) as h:
        await h.buy("u1", {"name": "Ada", "push_subscription": subscription(push_service)})
        await h.until(lambda: h.statuses() == [("delivered", None)])
    [delivered] = push_service.delivered
    assert delivered["payload"]["title"] == "Thanks, Ada"
    assert delivered["payload"]["tag"] == h.outbox.find()[0].fire_id


async def test_the_device_token_from_a_template(google: Google, http: httpx.AsyncClient) -> None:
    push = fcm(http, google, TokenCache(), extra="    token: '{{ user.traits.devices.android }}'\n")
    outcome = await push.attempt(message(push.action, traits={"name": "Ada", "devices": {"android": "device-7"}}))
    assert outcome.ok, outcome.error
    assert google.sent[-1]["body"]["message"]["token"] == "device-7"


async def test_a_vapid_key_from_a_pem_file(push_service: PushService, http: httpx.AsyncClient, tmp_path: Path) -> None:
    key_file = tmp_path / "vapid.pem"
    key_file.write_text(pem(push_service.vapid_key))
    push = webpush(http, push_service, key=str(key_file))
    outcome = await push.attempt(
        message(push.action, traits={"name": "Di", "push_subscription": subscription(push_service)})
    )
    assert outcome.ok, outcome.error
    assert push_service.delivered[-1]["payload"]["title"] == "Di, still thinking it over?"
