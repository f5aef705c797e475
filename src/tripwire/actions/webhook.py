"""Signed webhooks, per the Standard Webhooks specification."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from tripwire import __version__
from tripwire.actions.base import Channel, Message, Outcome, PermanentError


def default_body(message: Message) -> str:
    return json.dumps({"type": "tripwire.fire", "fire": message.fire, "user": message.user}, separators=(",", ":"))


class WebhookChannel(Channel):
    """POSTs the fire as JSON; `webhook-id` is the fire_id, so receivers can drop repeats."""

    type = "webhook"

    async def send(self, message: Message) -> Outcome:
        options = self.action.options
        body = message.render("body") or default_body(message)
        try:
            json.loads(body)
        except ValueError as exc:
            raise PermanentError(f"the body template did not render JSON: {exc}") from None
        headers = signed_headers(message.idempotency_key, body, options.get("secret"))
        for name in options.get("headers", {}):
            headers[name] = message.render(f"headers.{name}") or ""
        response = await self.request(options.get("method", "POST"), options["url"], content=body, headers=headers)
        return Outcome.success(response.status_code)


def signed_headers(message_id: str, body: str, secret: str | None) -> dict[str, str]:
    """JSON content headers with the idempotency key, signed when the action has a secret."""
    now = datetime.now(tz=UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": f"tripwire/{__version__}",
        "idempotency-key": message_id,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    if secret:
        headers["webhook-signature"] = Webhook(secret).sign(message_id, now, body)
    return headers
