"""Every delivery misconfiguration is reported by `tripwire check`, with line, field and fix."""

from __future__ import annotations

import pytest

from tripwire.errors import RulesError
from tripwire.rules import parse_rules

BASE = """\
settings:
  allowed_lateness: 5s
{settings}
actions:
{actions}
triggers:
  t:
    when: a
    actions: [a1]
{trigger}
"""

GOOD_ACTION = "  a1: {type: webhook, url: 'https://hooks.example.com/x'}"


def problems(
    actions: str = GOOD_ACTION, settings: str = "", trigger: str = "", env: dict[str, str] | None = None
) -> list[tuple[int | None, str, str]]:
    text = BASE.format(actions=actions, settings=settings, trigger=trigger)
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.yaml", environ=env or {})
    return [(p.line, p.field, p.message) for p in caught.value.problems]


CASES = [
    ("unknown type", "  a1: {type: fax}", "actions.a1.type", "'fax' is not an action type"),
    ("missing url", "  a1: {type: webhook}", "actions.a1", "a webhook action needs url"),
    ("bad url", "  a1: {type: webhook, url: 'ftp://x'}", "actions.a1.url", "is not an http(s) URL"),
    ("unknown key", "  a1: {type: slack, url: 'https://h.example.com', text: hi, colour: red}",
     "actions.a1.colour", "unknown key 'colour'"),
    ("bad method", "  a1: {type: webhook, url: 'https://h.example.com', method: DELETE}",
     "actions.a1.method", "method is POST, PUT, PATCH or GET"),
    ("template syntax", "  a1: {type: webhook, url: 'https://h.example.com', body: '{{ fire.user_id '}",
     "actions.a1.body", "template error: line 1"),
    ("unset variable", "  a1: {type: webhook, url: 'https://h.example.com', secret: '${HOOK_SECRET}'}",
     "actions.a1.secret", "${HOOK_SECRET} is not set in the environment"),
    ("bad timeout", "  a1: {type: webhook, url: 'https://h.example.com', timeout: soon}",
     "actions.a1.timeout", "is not a duration"),
    ("bad attempts", "  a1: {type: webhook, url: 'https://h.example.com', max_attempts: 0}",
     "actions.a1.max_attempts", "at least 1"),
    ("bad rate", "  a1: {type: webhook, url: 'https://h.example.com', rate_limit: 10}",
     "actions.a1.rate_limit", "{max: N, per: DURATION}"),
    ("email without smtp", "  a1: {type: email, from: a@b.c, subject: s, text: t}", "actions.a1",
     "an email action needs smtp"),
    ("email without body", "  a1: {type: email, smtp: {host: h}, from: a@b.c, subject: s}", "actions.a1",
     "needs text, html, or both"),
    ("smtp security", "  a1: {type: email, smtp: {host: h, security: ssl}, from: a@b.c, subject: s, text: t}",
     "actions.a1.smtp.security", "security is starttls, tls or none"),
    ("smtp port", "  a1: {type: email, smtp: {host: h, port: 99999}, from: a@b.c, subject: s, text: t}",
     "actions.a1.smtp.port", "is not a port number"),
    ("push provider", "  a1: {type: push, provider: apns, title: t, body: b}", "actions.a1.provider",
     "provider is webpush or fcm"),
    ("webpush keys", "  a1: {type: push, provider: webpush, title: t, body: b}", "actions.a1",
     "needs vapid_private_key"),
    ("airflow dag", "  a1: {type: airflow, url: 'https://af.example.com'}", "actions.a1", "needs dag_id"),
    ("not a mapping", "  a1: webhook", "actions.a1", "an action is a mapping with a type"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "action", "field", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_an_action_misconfiguration_names_the_field(name: str, action: str, field: str, fragment: str) -> None:
    found = problems(action)
    assert any(f == field and fragment in m and line == 5 for line, f, m in found), found


def test_an_unknown_action_in_a_trigger_lists_the_defined_ones() -> None:
    text = BASE.format(actions=GOOD_ACTION, settings="", trigger="").replace("[a1]", "[a1, a2]")
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.yaml", environ={})
    (problem,) = caught.value.problems
    assert (problem.line, problem.trigger, problem.field) == (9, "t", "triggers.t.actions")
    assert "unknown action a2; the actions section defines: a1" in problem.message


SETTINGS_CASES = [
    ("cap max", "  frequency_cap: {max: 0, per: 1d}", "settings.frequency_cap.max", "at least 1"),
    ("cap shape", "  frequency_cap: 3", "settings.frequency_cap", "{max: N, per: DURATION}"),
    ("cap channel", "  frequency_cap: {max: 1, per: 1d, channel: fax}", "settings.frequency_cap.channel",
     "'fax' is not a channel"),
    ("quiet start", '  quiet_hours: {start: "25:00", end: "08:00"}', "settings.quiet_hours.start",
     "is not a time of day"),
    ("quiet zone", '  quiet_hours: {start: "21:00", end: "08:00", default_timezone: Mars/Olympus}',
     "settings.quiet_hours.default_timezone", "is not an IANA time zone"),
    ("quiet channels", '  quiet_hours: {start: "21:00", end: "08:00", channels: [sms]}',
     "settings.quiet_hours.channels", "channels is a list of"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "settings", "field", "fragment"), SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_a_delivery_setting_misconfiguration_names_the_field(
    name: str, settings: str, field: str, fragment: str
) -> None:
    found = problems(settings=settings)
    assert any(f == field and fragment in m for _, f, m in found), found


TRIGGER_CASES = [
    ("holdout over 100", "    holdout: 150%", "triggers.t.holdout", "percentage below 100%"),
    ("holdout no percent", "    holdout: 0.1", "triggers.t.holdout", "percentage below 100%"),
    ("goal without within", "    goal: {event: purchase}", "triggers.t.goal", "goal is {event: NAME, within"),
    ("goal without event", "    goal: {within: 3d}", "triggers.t.goal", "needs the event"),
    ("goal bad duration", "    goal: {event: purchase, within: 3x}", "triggers.t.goal.within", "is not a duration"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "trigger", "field", "fragment"), TRIGGER_CASES, ids=[c[0] for c in TRIGGER_CASES])
def test_a_trigger_delivery_key_misconfiguration_names_the_field(
    name: str, trigger: str, field: str, fragment: str
) -> None:
    found = problems(trigger=trigger)
    assert any(f == field and fragment in m for _, f, m in found), found


def test_every_problem_is_reported_at_once() -> None:
    actions = "  a1: {type: webhook, url: 'ftp://x', secret: '${NOPE}'}\n  a2: {type: fax}"
    found = problems(actions, settings="  frequency_cap: {max: 0, per: 1d}", trigger="    holdout: 200%")
    fields = {f for _, f, _ in found}
    assert {"actions.a1.url", "actions.a1.secret", "actions.a2.type", "settings.frequency_cap.max",
            "triggers.t.holdout"} <= fields  # fmt: skip


def test_defaults_from_the_environment_fill_in_and_convert() -> None:
    text = BASE.format(
        actions="  a1: {type: webhook, url: '${URL:-https://h.example.com/x}', allow_private: '${PRIV:-true}',"
        " max_attempts: '${N:-3}'}",
        settings="",
        trigger="",
    )
    action = parse_rules(text, "rules.yaml", environ={}).actions["a1"]
    assert action.options["url"] == "https://h.example.com/x"
    assert action.options["allow_private"] is True and action.max_attempts == 3
    overridden = parse_rules(text, "rules.yaml", environ={"URL": "https://other.example.com"}).actions["a1"]
    assert overridden.options["url"] == "https://other.example.com"
