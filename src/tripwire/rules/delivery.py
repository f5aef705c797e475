"""Validation of what the rules file says about delivery: actions, caps, quiet hours, holdouts, goals.

Each action type declares its fields in `ACTION_FIELDS`; string values may name
environment variables as `${NAME}` (an unset one is a problem), and template fields
are compiled in Jinja2's sandbox so a syntax error is reported with its line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tripwire.rules.model import ActionConfig, FrequencyCap, Goal, QuietHours
from tripwire.rules.templates import TemplateError, compile_template

if TYPE_CHECKING:
    from tripwire.rules.source import Path
    from tripwire.rules.validate import _Builder

CHANNELS = ("webhook", "email", "slack", "push", "in_app", "airflow", "n8n")
COMMON_ACTION_FIELDS = {
    "type": "enum",
    "description": "text",
    "max_attempts": "int",
    "timeout": "duration",
    "concurrency": "int",
    "rate_limit": "rate",
}
# field -> kind; a trailing "!" marks a required field
ACTION_FIELDS: dict[str, dict[str, str]] = {
    "webhook": {"url!": "url", "method": "method", "headers": "template_map", "body": "template",
                "secret": "text", "allow_private": "bool"},
    "email": {"smtp!": "smtp", "from!": "text", "to": "template", "subject!": "template", "text": "template",
              "html": "template", "reply_to": "text"},
    "slack": {"url!": "url", "text!": "template", "allow_private": "bool"},
    "push": {"provider!": "provider", "title!": "template", "body!": "template", "url": "template",
             "subscription": "template", "vapid_private_key": "text", "vapid_subject": "text",
             "token": "template", "service_account": "text", "endpoint": "url", "data": "template_map",
             "ttl": "duration", "allow_private": "bool"},
    "in_app": {"title!": "template", "body!": "template", "url": "template", "ttl": "duration"},
    "airflow": {"url!": "url", "dag_id!": "text", "username": "text", "password": "text", "token": "text",
                "conf": "template_map", "allow_private": "bool"},
    "n8n": {"url!": "url", "method": "method", "headers": "template_map", "allow_private": "bool"},
}  # fmt: skip
SMTP_FIELDS = ("host", "port", "security", "username", "password", "timeout", "ca_file")
PUSH_REQUIRED = {
    "webpush": ("vapid_private_key", "vapid_subject"),
    "fcm": ("service_account",),
}
USER_FACING = frozenset({"email", "push"})
# ${NAME}, or ${NAME:-default} as in the shell: the default when NAME is unset or empty
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")


def substitute_env(value: Any, environ: Mapping[str, str]) -> tuple[Any, list[str]]:
    """Replace `${NAME}` and `${NAME:-default}` in every string of `value`; return it and the unset names."""
    missing: list[str] = []
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if environ.get(name):
                return environ[name]
            if default is not None:
                return default
            if name not in environ:
                missing.append(name)
            return ""

        return _ENV.sub(one, value), missing
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[k], more = substitute_env(v, environ)
            missing += more
        return out, missing
    if isinstance(value, list):
        items = []
        for v in value:
            item, more = substitute_env(v, environ)
            items.append(item)
            missing += more
        return items, missing
    return value, missing


class DeliveryChecks:
    """The delivery parts of a rules file, validated through the rules builder."""

    def __init__(self, builder: _Builder, environ: Mapping[str, str] | None = None) -> None:
        self.b = builder
        self.environ = os.environ if environ is None else environ

    # -- actions -----------------------------------------------------------------------

    def actions(self, spec: Any) -> dict[str, ActionConfig]:
        if spec is None:
            return {}
        if not isinstance(spec, dict):
            self.b.problem(("actions",), "actions is a mapping from action id to its settings")
            return {}
        out: dict[str, ActionConfig] = {}
        for action_id, body in spec.items():
            config = self.action(str(action_id), body)
            if config is not None:
                out[str(action_id)] = config
        return out

    def action(self, action_id: str, body: Any) -> ActionConfig | None:
        path: Path = ("actions", action_id)
        if not isinstance(body, dict):
            self.b.problem(path, f"an action is a mapping with a type: one of {', '.join(CHANNELS)}")
            return None
        kind = body.get("type")
        if kind not in CHANNELS:
            self.b.problem((*path, "type"), f"{kind!r} is not an action type; use one of {', '.join(CHANNELS)}")
            return None
        fields = ACTION_FIELDS[kind]
        allowed = {name.rstrip("!"): k for name, k in fields.items()} | COMMON_ACTION_FIELDS
        ok = True
        for name in fields:
            if name.endswith("!") and name[:-1] not in body:
                self.b.problem(path, f"{_article(kind)} {kind} action needs {name[:-1]}")
                ok = False
        options: dict[str, Any] = {}
        templates: dict[str, Any] = {}
        for name, raw in body.items():
            sub = (*path, str(name))
            if name not in allowed:
                self.b.problem(
                    sub, f"unknown key {name!r}; {_article(kind)} {kind} action takes {', '.join(sorted(allowed))}"
                )
                ok = False
                continue
            value, missing = substitute_env(raw, self.environ)
            if missing:
                names = ", ".join(f"${{{m}}}" for m in missing)
                self.b.problem(sub, f"{names} is not set in the environment; export it before starting tripwire")
                ok = False
                continue
            checked = self.value(allowed[name], value, sub, templates, str(name))
            if checked is _BAD:
                ok = False
            else:
                options[str(name)] = checked
        if kind == "push" and ok:
            for name in PUSH_REQUIRED[options["provider"]]:
                if name not in options:
                    self.b.problem(path, f"a push action with provider {options['provider']} needs {name}")
                    ok = False
        if kind == "email" and ok and "text" not in options and "html" not in options:
            self.b.problem(path, "an email action needs text, html, or both")
            ok = False
        if not ok:
            return None
        rate = options.get("rate_limit")
        return ActionConfig(
            id=action_id,
            type=kind,
            options=options,
            templates=templates,
            max_attempts=options.get("max_attempts", 10),
            # an email attempt is one SMTP conversation: it may take its smtp.timeout unless told otherwise
            timeout=options.get("timeout", options["smtp"]["timeout"] if kind == "email" else 10_000),
            concurrency=options.get("concurrency", 4),
            rate_limit=rate,
            line=self.b.source.line(path),
        )

    def value(self, kind: str, value: Any, path: Path, templates: dict[str, Any], name: str) -> Any:
        b = self.b
        if kind == "enum":
            return value
        if kind == "text":
            if not isinstance(value, str) or not value:
                b.problem(path, "takes non-empty text")
                return _BAD
            return value
        if kind == "url":
            # the value is not shown: a URL may hold a token, in its path or query or before its host
            if not isinstance(value, str):
                b.problem(path, f"takes an http(s) URL as text, not {_kind_of(value)}")
                return _BAD
            if not re.match(r"https?://[^\s/]+", value):
                b.problem(path, "is not an http(s) URL; write it as https://host/path (or http://)")
                return _BAD
            return value
        if kind == "method":
            if value not in ("POST", "PUT", "PATCH", "GET"):
                b.problem(path, f"{value!r}: method is POST, PUT, PATCH or GET")
                return _BAD
            return value
        if kind == "bool":
            if value in ("true", "false"):  # as ${NAME:-true} gives it
                return value == "true"
            if not isinstance(value, bool):
                b.problem(path, f"takes true or false, not {value!r}")
                return _BAD
            return value
        if kind == "int":
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if value.__class__ is not int or value < 1:
                b.problem(path, f"takes a whole number of at least 1, not {value!r}")
                return _BAD
            return value
        if kind == "duration":
            ms = b.duration(value, path)
            return _BAD if ms is None else ms
        if kind == "rate":
            return self.rate(value, path)
        if kind == "provider":
            if not isinstance(value, str):
                b.problem(path, f"provider is webpush or fcm, not {_kind_of(value)}")
                return _BAD
            if value not in PUSH_REQUIRED:
                b.problem(path, f"{_shown(value)}: provider is webpush or fcm")
                return _BAD
            return value
        if kind == "smtp":
            return self.smtp(value, path)
        if kind == "template":
            return self.template(value, path, templates, name)
        if kind == "template_map":
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                b.problem(path, "takes a mapping of names to text")
                return _BAD
            # every entry is checked (no short circuit), so every problem is reported
            checked = [self.template(v, (*path, k), templates, f"{name}.{k}") for k, v in value.items()]
            ok = all(c is not _BAD for c in checked)
            return value if ok else _BAD
        raise AssertionError(kind)

    def template(self, value: Any, path: Path, templates: dict[str, Any], name: str) -> Any:
        if not isinstance(value, str):
            # not shown: a mapping here is often a value pasted whole, a push subscription's keys say
            self.b.problem(path, f"takes text (a Jinja2 template), not {_kind_of(value)}")
            return _BAD
        try:
            templates[name] = compile_template(value, html=name == "html")
        except TemplateError as exc:
            self.b.problem(path, f"template error: {exc}")
            return _BAD
        return value

    def smtp(self, value: Any, path: Path) -> Any:
        if not isinstance(value, dict) or "host" not in value:
            self.b.problem(path, "smtp takes {host, port, security: starttls|tls|none, username, password}")
            return _BAD
        ok = True
        for key in value:
            if key not in SMTP_FIELDS:
                self.b.problem((*path, key), f"unknown key {key!r}; smtp takes {', '.join(SMTP_FIELDS)}")
                ok = False
        port = value.get("port", 587)
        if isinstance(port, str) and port.isdigit():  # as ${SMTP_PORT:-587} gives it
            port = int(port)
        if port.__class__ is not int or not 0 < port < 65536:
            self.b.problem((*path, "port"), f"{port!r} is not a port number")
            ok = False
        security = value.get("security", "starttls")
        if security not in ("starttls", "tls", "none"):
            self.b.problem((*path, "security"), f"{security!r}: security is starttls, tls or none")
            ok = False
        timeout = self.b.duration(value.get("timeout", "30s"), (*path, "timeout"))
        if not ok or timeout is None:
            return _BAD
        return {**value, "port": port, "security": security, "timeout": timeout}

    def rate(self, value: Any, path: Path) -> Any:
        if not isinstance(value, dict) or set(value) != {"max", "per"}:
            self.b.problem(path, "takes {max: N, per: DURATION}, e.g. {max: 10, per: 1s}")
            return _BAD
        per = self.b.duration(value["per"], (*path, "per"))
        if value["max"].__class__ is not int or value["max"] < 1:
            self.b.problem((*path, "max"), f"takes a whole number of at least 1, not {value['max']!r}")
            return _BAD
        return _BAD if per is None else (value["max"], per)

    # -- settings ----------------------------------------------------------------------

    def frequency_caps(self, value: Any) -> tuple[FrequencyCap, ...] | None:
        path: Path = ("settings", "frequency_cap")
        items = value if isinstance(value, list) else [value]
        caps = []
        for i, item in enumerate(items):
            sub = (*path, i) if isinstance(value, list) else path
            if not isinstance(item, dict) or not {"max", "per"} <= set(item) or set(item) - {"max", "per", "channel"}:
                self.b.problem(sub, "a frequency cap is {max: N, per: DURATION} with an optional channel")
                return None
            per = self.b.duration(item["per"], (*sub, "per"))
            channel = item.get("channel")
            if channel is not None and channel not in CHANNELS:
                self.b.problem((*sub, "channel"), f"{channel!r} is not a channel; use one of {', '.join(CHANNELS)}")
                return None
            if item["max"].__class__ is not int or item["max"] < 1 or per is None:
                self.b.problem((*sub, "max"), "max takes a whole number of at least 1")
                return None
            caps.append(FrequencyCap(item["max"], per, channel))
        return tuple(caps)

    def quiet_hours(self, value: Any) -> QuietHours | None:
        path: Path = ("settings", "quiet_hours")
        allowed = {"start", "end", "channels", "default_timezone"}
        if not isinstance(value, dict) or not {"start", "end"} <= set(value) or set(value) - allowed:
            self.b.problem(path, 'quiet hours are {start: "21:00", end: "08:00", channels: [...], default_timezone}')
            return None
        minutes = []
        for key in ("start", "end"):
            match = _CLOCK.fullmatch(str(value[key]))
            if match is None:
                self.b.problem((*path, key), f'{value[key]!r} is not a time of day such as "21:00" (quote it)')
                return None
            minutes.append(int(match.group(1)) * 60 + int(match.group(2)))
        channels = value.get("channels", sorted(USER_FACING))
        if not isinstance(channels, list) or any(c not in CHANNELS for c in channels):
            self.b.problem((*path, "channels"), f"channels is a list of: {', '.join(CHANNELS)}")
            return None
        zone = value.get("default_timezone", "UTC")
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError):
            self.b.problem((*path, "default_timezone"), f"{zone!r} is not an IANA time zone such as Europe/Paris")
            return None
        return QuietHours(minutes[0], minutes[1], frozenset(channels), str(zone))

    # -- trigger keys ------------------------------------------------------------------

    def holdout(self, value: Any, path: Path) -> float | None:
        match = _PERCENT.fullmatch(str(value)) if isinstance(value, str) else None
        share = float(match.group(1)) / 100 if match else None
        if share is None or not 0 <= share < 1:
            self.b.problem(path, f"{value!r}: holdout is a percentage below 100%, such as 10%")
            return None
        return share

    def goal(self, value: Any, path: Path) -> Goal | None:
        if not isinstance(value, dict) or set(value) - {"event", "type", "where", "within"} or "within" not in value:
            self.b.problem(path, "goal is {event: NAME, within: DURATION} (type and where allowed too)")
            return None
        within = self.b.duration(value["within"], (*path, "within"))
        pattern_spec = {k: v for k, v in value.items() if k != "within"}
        pattern = self.b.pattern(pattern_spec, path, activity_only=False) if pattern_spec else None
        if pattern_spec == {}:
            self.b.problem(path, "goal needs the event that counts as a conversion")
        if within is None or pattern is None:
            return None
        return Goal(pattern, within)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _kind_of(value: Any) -> str:
    """What `value` is, for a message that must not show it."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else "text"


def _shown(value: str) -> str:
    """Short text for a message, cut so a hostile file cannot flood the output."""
    text = repr(value)
    return text if len(text) <= 40 else text[:30] + "…'"


class _Bad:
    pass


_BAD: Any = _Bad()
