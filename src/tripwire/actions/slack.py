"""Slack incoming webhooks: `{"text": ...}` posted to the webhook URL of a channel."""

from __future__ import annotations

import json

from tripwire import __version__
from tripwire.actions.base import Channel, Message, Outcome, PermanentError


class SlackChannel(Channel):
    """Posts the rendered `text` (Slack mrkdwn). Slack keeps no idempotency key: a retry may post twice."""

    type = "slack"

    async def send(self, message: Message) -> Outcome:
        text = (message.render("text") or "").strip()
        if not text:
            raise PermanentError("the text template rendered nothing; Slack refuses an empty message")
        body = json.dumps({"text": text}, separators=(",", ":"))
        headers = {"content-type": "application/json", "user-agent": f"tripwire/{__version__}"}
        try:
            response = await self.request("POST", self.action.options["url"], content=body, headers=headers)
        except PermanentError as exc:
            if exc.status in (403, 404, 410):
                raise PermanentError(
                    f"{exc}; the webhook URL is revoked, or its channel archived: make a new one in Slack", exc.status
                ) from None
            raise
        return Outcome.success(response.status_code)
