"""Every action type of the rules language has a channel, and `make_channel` builds it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tripwire.actions.in_app import Inbox
from tripwire.actions.registry import CHANNELS, make_channel
from tripwire.rules import parse_rules
from tripwire.rules.delivery import CHANNELS as ACTION_TYPES
from tripwire.store.inbox import SqliteInbox

RULES = """\
triggers:
  t: {when: x, actions: [hook, mail, chat, web, phone, bell, dag, flow]}
actions:
  hook: {type: webhook, url: "https://hooks.example/t"}
  mail: {type: email, smtp: {host: smtp.example}, from: a@shop.example, subject: Hi, text: Hello}
  chat: {type: slack, url: "https://hooks.slack.com/services/T/B/X", text: Hi}
  web: {type: push, provider: webpush, vapid_private_key: k, vapid_subject: "mailto:a@shop.example", title: t, body: b}
  phone: {type: push, provider: fcm, service_account: "{}", title: t, body: b}
  bell: {type: in_app, title: t, body: b}
  dag: {type: airflow, url: "https://airflow.example", dag_id: d}
  flow: {type: n8n, url: "https://n8n.example/webhook/x"}
"""


def test_every_action_type_has_a_channel() -> None:
    assert set(CHANNELS) == set(ACTION_TYPES)
    assert all(channel.type == name for name, channel in CHANNELS.items())


async def test_make_channel_builds_the_channel_of_each_action(tmp_path: Path) -> None:
    rules = parse_rules(RULES)
    inbox = Inbox(SqliteInbox(tmp_path))
    async with httpx.AsyncClient() as http:
        for config in rules.actions.values():
            channel = make_channel(config, http, inbox=inbox)
            assert isinstance(channel, CHANNELS[config.type]) and channel.action is config
        with pytest.raises(ValueError, match="action 'bell' is in_app, but this server has no inbox"):
            make_channel(rules.actions["bell"], http, inbox=None)
