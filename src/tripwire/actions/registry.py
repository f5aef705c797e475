"""Every channel by its action type, and the one place that builds a channel for an action."""

from __future__ import annotations

import httpx

from tripwire.actions.airflow import AirflowChannel
from tripwire.actions.base import Channel
from tripwire.actions.email import EmailChannel
from tripwire.actions.in_app import InAppChannel, Inbox
from tripwire.actions.n8n import N8nChannel
from tripwire.actions.push import PushChannel
from tripwire.actions.slack import SlackChannel
from tripwire.actions.webhook import WebhookChannel
from tripwire.rules import ActionConfig

CHANNELS: dict[str, type[Channel]] = {
    channel.type: channel
    for channel in (
        WebhookChannel, EmailChannel, SlackChannel, PushChannel, InAppChannel, AirflowChannel, N8nChannel
    )
}  # fmt: skip


def make_channel(action: ActionConfig, http: httpx.AsyncClient, *, inbox: Inbox | None) -> Channel:
    """The channel that sends `action`'s deliveries; `in_app` actions need the server's inbox."""
    if action.type == "in_app":
        if inbox is None:
            raise ValueError(f"action {action.id!r} is in_app, but this server has no inbox")
        return InAppChannel(action, http, inbox=inbox)
    try:
        channel = CHANNELS[action.type]
    except KeyError:
        raise ValueError(f"action {action.id!r}: no channel for type {action.type!r}") from None
    return channel(action, http)
