"""Push notifications: Web Push (RFC 8030/8291/8292) or Firebase Cloud Messaging (HTTP v1).

Web Push: the payload is encrypted for the subscription (aes128gcm) and the request
carries a VAPID JWT; the fire_id is the message's `Topic`, so a push service that still
holds an earlier attempt replaces it instead of showing both. FCM: a service-account
OAuth2 token, then `messages:send`; the fire_id is the collapse key on Android and iOS.
Either way the fire_id is in the payload (`tag`, `data.fire_id`) for the app to drop repeats.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

# pywebpush and py_vapid ship without type information
from py_vapid import Vapid02, VapidException  # type: ignore[import-untyped]
from pywebpush import WebPusher, WebPushException  # type: ignore[import-untyped]

from tripwire.actions.base import (
    RETRYABLE_STATUS,
    Channel,
    Message,
    Outcome,
    PermanentError,
    RetryableError,
    retry_after_seconds,
)
from tripwire.actions.service_account import FCM_SCOPE, TOKENS, ServiceAccount, TokenCache
from tripwire.redact import redact_text
from tripwire.rules import ActionConfig
from tripwire.rules.templates import compile_template, render

FCM_ENDPOINT = "https://fcm.googleapis.com"
DEFAULT_TTL_MS = 86_400_000
VAPID_LIFETIME = 12 * 3600
_DEFAULT_SUBSCRIPTION = compile_template("{{ user.traits.push_subscription | tojson }}")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")


def payload(message: Message, title: str, body: str, url: str | None, data: dict[str, str]) -> dict[str, Any]:
    """What the app's service worker receives; `tag` lets it replace a repeated notification."""
    out: dict[str, Any] = {"title": title, "body": body, "tag": message.idempotency_key}
    if url:
        out["url"] = url
    out["data"] = {**data, "fire_id": message.idempotency_key}
    return out


def load_vapid(key: str) -> Any:
    """A VAPID signer from a PEM key, the path of a PEM file, or a base64url raw or DER key."""
    text = key.strip()
    try:
        # a key in base64 never starts like a path (DER keys start with "M"), nor ends in .pem
        if text.endswith(".pem") or text.startswith(("/", "./", "../", "~/")):
            text = Path(text).expanduser().read_text(encoding="utf-8").strip()
        if text.startswith("-----BEGIN"):
            return Vapid02.from_pem(text.encode())
        return Vapid02.from_string(text)
    except (OSError, ValueError, TypeError, VapidException) as exc:
        raise PermanentError(f"vapid_private_key is not a usable P-256 private key: {exc}") from None


class PushChannel(Channel):
    """One notification to one device or browser, by the action's provider."""

    type = "push"

    def __init__(self, action: ActionConfig, http: httpx.AsyncClient, *, tokens: TokenCache = TOKENS) -> None:
        super().__init__(action, http)
        self.tokens = tokens
        self._vapid: Any = None
        self._account: ServiceAccount | None = None

    async def send(self, message: Message) -> Outcome:
        title = (message.render("title") or "").strip()
        body = (message.render("body") or "").strip()
        url = (message.render("url") or "").strip() or None
        data = {name: message.render(f"data.{name}") or "" for name in self.action.options.get("data", {})}
        if self.action.options["provider"] == "webpush":
            return await self.webpush(message, payload(message, title, body, url, data))
        return await self.fcm(message, title, body, url, data)

    @property
    def ttl_seconds(self) -> int:
        return int(self.action.options.get("ttl", DEFAULT_TTL_MS)) // 1000

    # -- Web Push ------------------------------------------------------------------------

    def subscription(self, message: Message) -> dict[str, Any]:
        """The rendered subscription (the JSON of the browser's PushSubscription)."""
        template = self.action.templates.get("subscription")
        if template is None:
            traits = message.user.get("traits") or {}
            if not isinstance(traits, dict) or not traits.get("push_subscription"):
                raise PermanentError(
                    f"user {message.user.get('id')!r} has no push_subscription trait; send the browser's "
                    "PushSubscription as that trait, or set subscription: on the action"
                )
            template = _DEFAULT_SUBSCRIPTION
        text = render(template, message.context())
        try:
            value = json.loads(text)
            if isinstance(value, str):  # a subscription kept as a JSON string
                value = json.loads(value)
        except ValueError as exc:
            raise PermanentError(f"the subscription is not JSON: {exc}") from None
        keys = value.get("keys") if isinstance(value, dict) else None
        if not isinstance(value, dict) or not isinstance(value.get("endpoint"), str) or not isinstance(keys, dict):
            raise PermanentError('the subscription must be {"endpoint": URL, "keys": {"p256dh": ..., "auth": ...}}')
        if not str(value["endpoint"]).startswith(("https://", "http://")):
            raise PermanentError(f"the subscription endpoint {value['endpoint']!r} is not an http(s) URL")
        return value

    async def webpush(self, message: Message, content: dict[str, Any]) -> Outcome:
        options = self.action.options
        subscription = self.subscription(message)
        endpoint = subscription["endpoint"]
        try:
            encrypted = WebPusher(subscription).encode(json.dumps(content).encode(), "aes128gcm")["body"]
        except (WebPushException, ValueError, TypeError) as exc:
            raise PermanentError(f"cannot encrypt for this subscription (bad keys?): {exc}") from None
        if self._vapid is None:
            self._vapid = load_vapid(options["vapid_private_key"])
        parts = urlsplit(endpoint)
        subject = options["vapid_subject"]
        claims = {
            "sub": subject if ":" in subject else f"mailto:{subject}",
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + VAPID_LIFETIME,
        }
        try:
            headers = {k.lower(): v for k, v in self._vapid.sign(claims).items()}
        except VapidException as exc:
            raise PermanentError(f"VAPID: {exc}") from None
        headers |= {
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "ttl": str(self.ttl_seconds),
            "urgency": "normal",
        }
        if _TOPIC.fullmatch(message.idempotency_key):
            headers["topic"] = message.idempotency_key
        try:
            response = await self.request("POST", endpoint, content=encrypted, headers=headers)
        except PermanentError as exc:
            if exc.status in (404, 410):
                raise PermanentError(
                    f"the push subscription is gone ({exc.status}): the browser unsubscribed or the subscription "
                    "expired; remove it from the user's traits",
                    exc.status,
                ) from None
            raise
        return Outcome.success(response.status_code, location=response.headers.get("location"))

    # -- Firebase Cloud Messaging --------------------------------------------------------------

    def device_token(self, message: Message) -> str:
        if "token" in self.action.templates:
            token = (message.render("token") or "").strip()
            if not token:
                raise PermanentError("the token template rendered nothing; no device to send to")
            return token
        traits = message.user.get("traits") or {}
        trait = traits.get("fcm_token") if isinstance(traits, dict) else None
        if not isinstance(trait, str) or not trait:
            raise PermanentError(
                f"user {message.user.get('id')!r} has no fcm_token trait; send the app's FCM registration token "
                "as that trait, or set token: on the action"
            )
        return trait

    async def fcm(self, message: Message, title: str, body: str, url: str | None, data: dict[str, str]) -> Outcome:
        options = self.action.options
        if self._account is None:
            self._account = ServiceAccount.parse(options["service_account"])
        account = self._account
        fire_id = message.idempotency_key
        fields = {**data, "fire_id": fire_id, **({"url": url} if url else {})}
        ttl = self.ttl_seconds
        body_json = {
            "message": {
                "token": self.device_token(message),
                "notification": {"title": title, "body": body},
                "data": fields,
                "android": {"collapse_key": fire_id, "ttl": f"{ttl}s"},
                "apns": {"headers": {"apns-collapse-id": fire_id}},
                "webpush": {"headers": {"TTL": str(ttl), "Topic": fire_id}},
            }
        }
        base = options.get("endpoint", FCM_ENDPOINT).rstrip("/")
        url_send = f"{base}/v1/projects/{account.project_id}/messages:send"
        access = await self.tokens.token(account, FCM_SCOPE, self.request)
        response = await self.http.post(
            url_send,
            content=json.dumps(body_json),
            headers={"authorization": f"Bearer {access}", "content-type": "application/json; charset=utf-8"},
            timeout=self.http_timeout,
        )
        if response.status_code >= 300:
            raise self.fcm_error(response, account)
        name = response.json().get("name") if response.content else None
        return Outcome.success(response.status_code, name=name)

    def fcm_error(self, response: httpx.Response, account: ServiceAccount) -> PermanentError | RetryableError:
        """FCM's error (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode) as retry or give up."""
        status = response.status_code
        try:
            error = response.json()["error"]
            code = next((d["errorCode"] for d in error.get("details", []) if "errorCode" in d), error.get("status", ""))
            text = f"FCM {status} {code}: {error.get('message', '')}"
        except (ValueError, KeyError, TypeError, AttributeError):
            code, text = "", f"FCM {status}: {redact_text(response.text[:4_096])[:200]}"
        if code == "UNREGISTERED" or status == 404:
            return PermanentError(
                f"{text}; the device token is no longer registered: remove it from the user's traits", status
            )
        if status == 401 and code != "THIRD_PARTY_AUTH_ERROR":
            self.tokens.forget(account, FCM_SCOPE)  # expired or revoked: fetch a new one next time
            return RetryableError(text, status=status)
        if status in RETRYABLE_STATUS or status >= 500:
            return RetryableError(text, retry_after_seconds(response.headers.get("retry-after")), status)
        return PermanentError(text, status)
