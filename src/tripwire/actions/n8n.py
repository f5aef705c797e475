"""n8n: the fire posted to a workflow's Webhook node, with the fire_id as Idempotency-Key."""

from __future__ import annotations

import json

from tripwire import __version__
from tripwire.actions.base import Channel, Message, Outcome, PermanentError


def fire_body(message: Message) -> str:
    """What the workflow receives: the fire, the user with traits, and the events that caused it."""
    payload = {"type": "tripwire.fire", "fire": message.fire, "user": message.user, "events": message.events}
    return json.dumps(payload, separators=(",", ":"))


class N8nChannel(Channel):
    """Starts the workflow; with method GET the fire's fields go in the query string instead of a body."""

    type = "n8n"

    async def send(self, message: Message) -> Outcome:
        options = self.action.options
        method = options.get("method", "POST")
        headers = {"user-agent": f"tripwire/{__version__}", "idempotency-key": message.idempotency_key}
        for name in options.get("headers", {}):
            headers[name] = message.render(f"headers.{name}") or ""
        kwargs: dict[str, object]
        if method == "GET":
            fire = message.fire
            kwargs = {"params": {k: fire[k] for k in ("fire_id", "trigger", "user_id", "fire_time")}}
        else:
            headers["content-type"] = "application/json"
            kwargs = {"content": fire_body(message)}
        try:
            response = await self.request(method, options["url"], headers=headers, **kwargs)
        except PermanentError as exc:
            if exc.status == 404:
                raise PermanentError(
                    f"{exc}; is the workflow active? (a /webhook-test/ URL answers only while the editor listens)",
                    404,
                ) from None
            raise
        return Outcome.success(response.status_code)
