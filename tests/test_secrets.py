"""No secret in any repr, log line, error or CLI output: each output is rendered in full and
searched for every secret value; URLs that carry credentials are shown redacted."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from http_harness import ADMIN, harness
from serverproc import ServerProcess
from test_dispatcher import START, Clock, rules_text, start
from tripwire.cli import main
from tripwire.errors import RulesError
from tripwire.redact import redact_text, redact_url
from tripwire.rules import parse_rules
from tripwire.server.credentials import load_credentials
from tripwire.server.logs import RedactingFormatter, json_logger

SLACK_SECRET = "SlackHookSecret0123456789"
ENV = {
    "SLACK_URL": f"https://hooks.slack.com/services/T0SECRET1/B0SECRET2/{SLACK_SECRET}",
    "HOOK_URL": "https://hookuser:HookPassword42@crm.example.com/in?token=QueryToken77&page=2",
    "HOOK_AUTH": "Bearer HeaderBearer5150",
    "HOOK_SECRET": "whsec_SigningSecret8080",
    "SMTP_PASSWORD": "SmtpPassword3141",
    "VAPID_KEY": "-----BEGIN PRIVATE KEY-----\nVapidPrivateKey2718\n-----END PRIVATE KEY-----",
    "FCM_ACCOUNT": json.dumps({"type": "service_account", "private_key": "FcmPrivateKey1618", "client_email": "a@b"}),
    "AIRFLOW_PASSWORD": "AirflowPassword1729",
    "AIRFLOW_TOKEN": "AirflowToken6174",
    "N8N_URL": "https://n8n.example.com/webhook/N8nWebhookPath4669",
}
SECRETS = [
    SLACK_SECRET, "B0SECRET2", "HookPassword42", "QueryToken77", "HeaderBearer5150", "SigningSecret8080",
    "SmtpPassword3141", "VapidPrivateKey2718", "FcmPrivateKey1618", "AirflowPassword1729", "AirflowToken6174",
    "N8nWebhookPath4669",
]  # fmt: skip

RULES = """\
triggers:
  big: {when: purchase, actions: [slack, hook, mail, webpush, fcm, airflow, n8n]}
actions:
  slack: {type: slack, url: "${SLACK_URL}", text: "a purchase"}
  hook:
    type: webhook
    url: ${HOOK_URL}
    secret: ${HOOK_SECRET}
    headers: {Authorization: "${HOOK_AUTH}"}
  mail:
    type: email
    smtp: {host: smtp.example.com, username: shop, password: "${SMTP_PASSWORD}"}
    from: shop@example.com
    to: "{{ user.traits.email }}"
    subject: thanks
    text: thanks
  webpush:
    type: push
    provider: webpush
    vapid_private_key: ${VAPID_KEY}
    vapid_subject: mailto:ops@example.com
    title: hi
    body: there
  fcm: {type: push, provider: fcm, service_account: "${FCM_ACCOUNT}", title: hi, body: there}
  airflow:
    type: airflow
    url: https://airflow.example.com
    dag_id: win_back
    username: admin
    password: ${AIRFLOW_PASSWORD}
    token: ${AIRFLOW_TOKEN}
  n8n: {type: n8n, url: "${N8N_URL}"}
"""

# the same secrets where each value is wrong, so that the validator's messages are about them
BAD_RULES = """\
triggers:
  big: {when: purchase, actions: [slack, hook, n8n]}
actions:
  slack: {type: slack, url: "htps://hooks.slack.com/services/T0SECRET1/B0SECRET2/${SLACK_SECRET}", text: hi}
  hook:
    type: webhook
    url: "hookuser:HookPassword42@crm.example.com/in?token=QueryToken77"
    headers: {Authorization: "${HOOK_AUTH} {{ oops"}
    allow_private: "${HOOK_SECRET}"
    method: "${AIRFLOW_PASSWORD}"
    max_attempts: "${AIRFLOW_TOKEN}"
  n8n: {type: n8n, url: " ${N8N_URL}"}
"""


# values pasted whole where the rules want text: a subscription's keys, a URL without its scheme
PASTED_SECRETS = ["PushAuthSecret5678", "PushP256Key9012", "PushEndpoint3456", "HookPassword42", "PathToken7777"]
PASTED_RULES = """\
triggers:
  big: {when: purchase, actions: [webpush, hook]}
actions:
  webpush:
    type: push
    provider: webpush
    vapid_private_key: k
    vapid_subject: mailto:ops@example.com
    title: hi
    body: there
    subscription:
      endpoint: https://push.example.com/send/PushEndpoint3456
      keys: {auth: PushAuthSecret5678, p256dh: PushP256Key9012}
    data: {links: [hookuser:HookPassword42@crm.example.com, "https://crm.example.com/in/PathToken7777"]}
  hook: {type: webhook, url: "hookuser:HookPassword42@crm.example.com/in/PathToken7777"}
"""


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in {**ENV, "SLACK_SECRET": SLACK_SECRET}.items():
        monkeypatch.setenv(name, value)
    return ENV


def test_check_shows_every_action_with_its_url_redacted(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    result = CliRunner().invoke(main, ["check", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert leaked(result.output) == []
    assert "https://hooks.slack.com/services/T0…/***" in result.output
    assert "https://***@crm.example.com/in?token=***&page=2" in result.output
    assert "https://n8n.example.com/webhook/***" in result.output


def test_the_validators_messages_never_quote_a_secret(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(BAD_RULES)
    result = CliRunner().invoke(main, ["check", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert result.output.count("triggers.") + result.output.count("actions.") >= 6, result.output
    assert leaked(result.output) == [], result.output
    with pytest.raises(RulesError) as caught:
        parse_rules(BAD_RULES, "rules.yaml", {**env, "SLACK_SECRET": SLACK_SECRET})
    assert leaked(str(caught.value)) == [] and leaked(repr(caught.value.problems)) == []


def test_a_value_pasted_whole_in_a_text_or_url_field_is_named_by_its_kind_not_shown(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(PASTED_RULES, "rules.yaml")
    messages = {p.field: p.message for p in caught.value.problems}
    assert messages == {
        "actions.webpush.subscription": "takes text (a Jinja2 template), not a mapping",
        "actions.webpush.data.links": "takes text (a Jinja2 template), not a list",
        "actions.hook.url": "is not an http(s) URL; write it as https://host/path (or http://)",
    }
    path = tmp_path / "rules.yaml"
    path.write_text(PASTED_RULES)
    result = CliRunner().invoke(main, ["check", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "actions.webpush.subscription" in result.output, result.output
    assert [secret for secret in PASTED_SECRETS if secret in result.output] == [], result.output


async def test_a_reload_error_never_quotes_a_secret(tmp_path: Path, env: dict[str, str]) -> None:
    async with harness(tmp_path) as h:
        h.rules_path.write_text(BAD_RULES)
        async with h.client() as client:
            reply = await client.post("/api/rules/reload", headers=ADMIN)
        assert reply.status_code == 422
        assert leaked(reply.text) == [] and leaked(h.logs.getvalue()) == []


def test_no_repr_shows_a_secret(tmp_path: Path, env: dict[str, str]) -> None:
    rules = parse_rules(RULES, "rules.yaml")
    shown = [repr(rules), str(rules), *(repr(action) for action in rules.actions.values())]
    made = load_credentials(tmp_path, {})
    shown += [repr(made), str(made), repr(made.admin_token), repr(made.write_keys)]
    made_secrets = [made.admin_token.reveal(), made.inbox_secret.reveal(), *(k.reveal() for k in made.write_keys)]
    for text in shown:
        assert leaked(text) == [] and not [s for s in made_secrets if s in text], text


def test_log_lines_redact_urls_and_tokens_in_fields_and_tracebacks(env: dict[str, str]) -> None:
    stream = io.StringIO()
    log = json_logger(stream)
    try:
        raise RuntimeError(f"Client error '404 Not Found' for url '{env['SLACK_URL']}'")
    except RuntimeError:
        log.exception("delivery failed", url=env["HOOK_URL"], reason=f"sent {env['HOOK_AUTH']} to {env['N8N_URL']}")
    log.warning("odd", authorization=env["HOOK_AUTH"], detail=f"password={env['SMTP_PASSWORD']}", at=[env["N8N_URL"]])
    log.warning("pem", key=env["VAPID_KEY"], account=env["FCM_ACCOUNT"])
    lines = stream.getvalue()
    assert len(lines.splitlines()) == 3
    assert leaked(lines) == [], lines
    exception = json.loads(lines.splitlines()[0])["exception"]
    assert "Traceback" in exception and "https://hooks.slack.com/services/T0…/***" in exception


def test_uvicorns_lines_are_redacted_too(env: dict[str, str]) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tripwire.test.uvicorn")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise ValueError(env["HOOK_URL"])
    except ValueError:
        logger.exception("Exception in ASGI application for %s", env["SLACK_URL"])
    finally:
        logger.removeHandler(handler)
    assert "Traceback" in stream.getvalue() and leaked(stream.getvalue()) == [], stream.getvalue()


def test_serve_does_not_print_the_credentials_it_makes_when_its_output_is_not_a_terminal(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("triggers:\n  a: {when: x}\n")
    blank = {"TRIPWIRE_WRITE_KEYS": "", "TRIPWIRE_ADMIN_TOKEN": "", "TRIPWIRE_INBOX_SECRET": ""}
    server = ServerProcess(rules, tmp_path / "data", env=blank, log_level="info")
    with server:
        pass
    saved: dict[str, Any] = json.loads((tmp_path / "data" / "credentials.json").read_text())
    made = [*saved["write_keys"], saved["admin_token"], saved["inbox_secret"]]
    output = server.log_path.read_text()
    assert "admin token: (new, saved in" in output, output
    assert [secret for secret in made if secret in output] == [], output


def test_the_deliveries_command_redacts_urls_in_reasons(tmp_path: Path, env: dict[str, str]) -> None:
    from tripwire.store import SqliteStore

    store = SqliteStore(tmp_path)
    store.open()  # applies the migrations: the tables exist
    store.close()
    with sqlite3.connect(tmp_path / "tripwire.db") as db:
        db.execute(
            "INSERT INTO deliveries (fire_id, action, channel, trigger, user_id, status, attempts, next_at, reason,"
            " created_at, updated_at) VALUES ('f', 'slack', 'slack', 'big', 'u1', 'dead', 3, 0, ?, 0, 0)",
            (f"gave up after 3 attempts: HTTP 404 from {env['SLACK_URL']}",),
        )
    result = CliRunner().invoke(main, ["deliveries", "--data", str(tmp_path), "--dead"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "hooks.slack.com/services/T0…/***" in result.output and leaked(result.output) == []


ECHOED = ["EchoedBearer4242", "EchoedQueryToken99", "EchoedApiKey31"]


@contextmanager
def echoing_receiver(statuses: list[int]) -> Iterator[str]:
    """A real receiver on loopback whose error bodies quote what it was sent, as some do."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the stdlib names it so
            self.rfile.read(int(self.headers.get("content-length") or 0))
            status = statuses.pop(0) if statuses else 200
            body = json.dumps({
                "error": f"rejected Authorization: {self.headers.get('authorization')}",
                "docs": "https://api.example.com/help?token=EchoedQueryToken99",
                "api_key": "EchoedApiKey31",
            }).encode()  # fmt: skip
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_delivery_errors_are_stored_with_the_receivers_secrets_redacted(tmp_path: Path) -> None:
    clock = Clock(START)
    headers = "    headers: {Authorization: 'Bearer EchoedBearer4242'}\n"
    with echoing_receiver([503, 401]) as url:
        async with start(tmp_path, rules_text(url, action_extra=headers), clock) as h:
            await h.buy("u1")
            await h.until(lambda: h.attempts_recorded() == 1)
            [(status, retry_reason)] = h.statuses()
            clock.now += 3600
            await h.until(lambda: h.statuses()[0][0] == "dead")
            [(_, dead_reason)] = h.statuses()
            attempts = h.outbox.attempts(h.outbox.find()[0].id)
    assert status == "pending" and [(a.outcome, a.http_status) for a in attempts] == [("retry", 503), ("failed", 401)]
    stored = [retry_reason or "", dead_reason or "", *(a.error or "" for a in attempts)]
    for text in stored:
        assert "rejected Authorization: Bearer ***" in text and "help?token=***" in text, text
        assert [secret for secret in ECHOED if secret in text] == [], text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnopqrstuvwx",
         "https://hooks.slack.com/services/T0…/***"),
        ("https://n8n.example.com/webhook-test/order-created", "https://n8n.example.com/webhook-test/***"),
        ("https://u:p@h.example/x?access_token=abc&page=2#frag", "https://***@h.example/x?access_token=***&page=2#***"),
        ("https://fcm.googleapis.com/fcm/send/dGhpc2lzYXRva2VuMTIz:APA91bH", "https://fcm.googleapis.com/fcm/send/***"),
        ("https://api.example.com/v1/events?limit=10", "https://api.example.com/v1/events?limit=10"),
        ("http://[::1", "http://***"),
    ],
)  # fmt: skip
def test_urls_keep_what_tells_them_apart_and_lose_their_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_text(f"failed ({url}).") == f"failed ({shown})."


def test_an_error_answer_is_masked_before_it_is_cut_so_no_part_of_a_secret_shows() -> None:
    import httpx

    from tripwire.actions.base import RetryableError, raise_for_status

    body = "x" * 170 + " Bearer sk_live_0123456789abcdefghijklmnopqrstuvwxyz"  # cut at 200 mid-token
    response = httpx.Response(503, text=body, request=httpx.Request("POST", "https://hooks.example.com/in"))
    with pytest.raises(RetryableError) as caught:
        raise_for_status(response)
    assert "sk_live" not in str(caught.value) and "sk_l" not in str(caught.value)
