"""Turn a parsed rules document into `Rules`, collecting every problem at once."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from tripwire.durations import ALLOWED as DURATION_ALLOWED
from tripwire.durations import format_duration, parse_duration
from tripwire.errors import DurationError, RuleProblem
from tripwire.redact import redact_text
from tripwire.rules.delivery import DeliveryChecks
from tripwire.rules.model import (
    ACTIVITY_TYPES,
    EVENT_TYPES,
    ActivityGuard,
    Guard,
    Matcher,
    Pattern,
    Rules,
    Settings,
    Shape,
    TraitGuard,
    Trigger,
)
from tripwire.rules.patterns import PatternError, check_pattern
from tripwire.rules.source import Path, Source
from tripwire.rules.where import (
    COMBINATORS,
    OPERATORS,
    Predicate,
    all_of,
    any_of,
    compile_path,
    is_number,
    negate,
    path_predicate,
)

COMMON_KEYS = ("description", "actions", "cooldown", "if", "holdout", "goal")
SHAPE_KEYS: dict[Shape, tuple[str, ...]] = {
    "count": ("when", "count", "within", "key"),
    "absence": ("when", "unless", "within", "restart", "key"),
    "inactivity": ("inactive", "of"),
}
SETTINGS_KEYS = (
    "allowed_lateness",
    "clock_skew_tolerance",
    "restart_grace",
    "dedup_window",
    "frequency_cap",
    "quiet_hours",
    "topic",
    "group",
)
# Kafka's own rules for a topic name; a consumer group id is any short text.
KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
TOP_KEYS = ("settings", "triggers", "actions")
# A bound far past any window or cooldown, kept so that every deadline stays a date (year 9999 at most)
MAX_DURATION_MS = 100 * 365 * 86_400_000
# action settings whose values are credentials, or hold them (a webhook URL's path): never quoted
_SECRET_FIELDS = frozenset(
    {"url", "endpoint", "headers", "secret", "password", "username", "token", "vapid_private_key", "service_account"}
)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_TRIGGER_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_PATH = re.compile(r"[^.\s]+(\.[^.\s]+)*")


class _Builder:
    def __init__(self, source: Source, problems: list[RuleProblem], environ: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.problems = problems
        self.current: str | None = None
        self.delivery = DeliveryChecks(self, environ)

    def problem(self, path: Path, message: str) -> None:
        field = ".".join(str(p) for p in path) or "(top level)"
        if path[:1] == ("actions",) and (_SECRET_FIELDS.intersection(path[2:]) or "${" in str(self.raw(path))):
            # a value quoted here may be a credential, and one from the environment may be anything
            message = _QUOTED.sub("'***'", message)
        message = redact_text(message)
        self.problems.append(RuleProblem(self.source.filename, self.source.line(path), self.current, field, message))

    def raw(self, path: Path) -> Any:
        """The value at `path` as the file wrote it (before `${NAME}` is filled in), None if absent."""
        value = self.source.data
        for step in path:
            found = isinstance(value, dict) and step in value
            found |= isinstance(value, list) and isinstance(step, int) and step < len(value)
            if not found:
                return None
            value = value[step]
        return value

    # -- scalars -------------------------------------------------------------------

    def duration(self, value: Any, path: Path, *, positive: bool = True) -> int | None:
        try:
            ms = parse_duration(value)
        except (DurationError, ValueError):  # ValueError: more digits than Python converts
            self.problem(path, f"{_shown(value)} is not a duration; use {DURATION_ALLOWED}")
            return None
        if ms > MAX_DURATION_MS:
            longest = format_duration(MAX_DURATION_MS)
            self.problem(path, f"{_shown(value)} is longer than {longest}, the longest allowed")
            return None
        if positive and ms <= 0:
            self.problem(path, "must be longer than zero")
            return None
        return ms

    def path_text(self, value: Any, path: Path) -> str | None:
        if not isinstance(value, str) or not _PATH.fullmatch(value):
            self.problem(path, f"{value!r} is not a dotted path such as properties.product_id")
            return None
        return value

    # -- where ---------------------------------------------------------------------

    def where(self, spec: Any, path: Path) -> Predicate | None:
        if not isinstance(spec, dict) or not spec:
            self.problem(path, "where takes a mapping of path: value or path: {operator: value}")
            return None
        parts: list[Predicate] = []
        ok = True
        for name, value in spec.items():
            sub = (*path, name)
            part: Predicate | None
            if name in ("any", "all"):
                if not isinstance(value, list) or not value:
                    self.problem(sub, f"{name} takes a non-empty list of where mappings")
                    ok = False
                    continue
                inner = [self.where(item, (*sub, i)) for i, item in enumerate(value)]
                if any(p is None for p in inner):
                    ok = False
                    continue
                preds = [p for p in inner if p is not None]
                part = any_of(preds) if name == "any" else all_of(preds)
            elif name == "not":
                part = self.where(value, sub)
                part = negate(part) if part is not None else None
            else:
                text = self.path_text(name, sub)
                ops = self.operators(value, sub) if text else None
                part = path_predicate(text, ops) if text and ops is not None else None
            if part is None:
                ok = False
            else:
                parts.append(part)
        return all_of(parts) if ok else None

    def operators(self, value: Any, path: Path) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return {"eq": value}
        if not value:
            self.problem(path, f"an empty mapping has no operator; use one of {', '.join(OPERATORS)}")
            return None
        ok = True
        for op, operand in value.items():
            if not self.operand(op, operand, (*path, op)):
                ok = False
        return dict(value) if ok else None

    def operand(self, op: Any, operand: Any, path: Path) -> bool:
        if op not in OPERATORS:
            hint = " (any/all/not combine conditions, they do not go under a path)" if op in COMBINATORS else ""
            self.problem(path, f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}{hint}")
            return False
        if op in ("gt", "gte", "lt", "lte") and not (is_number(operand) or isinstance(operand, str)):
            self.problem(path, f"{op} compares with a number or a string, not {operand!r}")
            return False
        if op in ("starts_with", "ends_with", "matches") and not isinstance(operand, str):
            self.problem(path, f"{op} takes a string, not {operand!r}")
            return False
        if op == "exists" and not isinstance(operand, bool):
            self.problem(path, f"exists takes true or false, not {operand!r}")
            return False
        if op == "matches":
            try:
                check_pattern(operand)
            except PatternError as exc:
                self.problem(path, f"{_shown(operand)}: {exc}")
                return False
        return True

    # -- patterns --------------------------------------------------------------------

    def pattern(self, spec: Any, path: Path, *, activity_only: bool = False) -> Pattern | None:
        items = spec if isinstance(spec, list) else [spec]
        if isinstance(spec, list) and not spec:
            self.problem(path, "an empty list matches nothing; give at least one event")
            return None
        matchers: list[Matcher] = []
        ok = True
        for i, item in enumerate(items):
            sub = (*path, i) if isinstance(spec, list) else path
            matcher = self.matcher(item, sub, activity_only=activity_only)
            if matcher is None:
                ok = False
            else:
                matchers.append(matcher)
        if not ok:
            return None
        return Pattern(tuple(matchers), activity_only, _describe(spec))

    def matcher(self, spec: Any, path: Path, *, activity_only: bool) -> Matcher | None:
        if isinstance(spec, str) and spec:
            return Matcher(names=frozenset([spec]))
        if not isinstance(spec, dict) or not spec:
            self.problem(
                path,
                f"{spec!r} is not an event pattern; use an event name, a list of them, "
                "or {event: NAME, type: TYPE, where: {...}}",
            )
            return None
        ok = True
        for key in spec:
            if key not in ("event", "type", "where"):
                self.problem((*path, key), f"unknown key {key!r}; an event pattern takes event, type and where")
                ok = False
        names = self.names(spec["event"], (*path, "event")) if "event" in spec else None
        types = self.types(spec["type"], (*path, "type"), activity_only) if "type" in spec else None
        where = self.where(spec["where"], (*path, "where")) if "where" in spec else None
        if ("event" in spec and names is None) or ("type" in spec and types is None):
            ok = False
        if "where" in spec and where is None:
            ok = False
        return Matcher(names, types, where) if ok else None

    def names(self, value: Any, path: Path) -> frozenset[str] | None:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v for v in items):
            self.problem(path, f"{value!r}: event takes an event name or a list of names")
            return None
        return frozenset(items)

    def types(self, value: Any, path: Path, activity_only: bool) -> frozenset[str] | None:
        items = value if isinstance(value, list) else [value]
        allowed = ACTIVITY_TYPES if activity_only else EVENT_TYPES
        bad = [v for v in items if not isinstance(v, str) or v not in allowed]  # a mapping is not hashable
        if bad or not items:
            note = " (only activity events count here)" if activity_only else ""
            self.problem(path, f"{bad or value!r}: type takes {', '.join(sorted(allowed))}{note}")
            return None
        return frozenset(items)

    # -- guards ----------------------------------------------------------------------

    def guards(self, spec: Any, path: Path) -> tuple[Guard, ...] | None:
        items = spec if isinstance(spec, list) else [spec]
        guards: list[Guard] = []
        ok = True
        for i, item in enumerate(items):
            sub = (*path, i) if isinstance(spec, list) else path
            guard = self.guard(item, sub)
            if guard is None:
                ok = False
            else:
                guards.append(guard)
        return tuple(guards) if ok else None

    def guard(self, spec: Any, path: Path) -> Guard | None:
        kinds = [k for k in ("trait", "did", "did_not") if isinstance(spec, dict) and k in spec]
        if len(kinds) != 1:
            self.problem(
                path,
                "a guard is one of {trait: PATH, <operator>: VALUE}, "
                "{did: EVENT, within: D, min_count: N} or {did_not: EVENT, within: D}",
            )
            return None
        assert isinstance(spec, dict)
        kind = kinds[0]
        if kind == "trait":
            text = self.path_text(spec["trait"], (*path, "trait"))
            ops = {k: v for k, v in spec.items() if k != "trait"}
            if not ops:
                self.problem(path, f"a trait guard needs an operator: one of {', '.join(OPERATORS)}")
                return None
            checked = [self.operand(op, v, (*path, op)) for op, v in ops.items()]  # report every bad operator
            ok = all(checked)
            if text is None or not ok:
                return None
            return TraitGuard(text, path_predicate(text, ops), f"trait {text} {_describe(ops)}")
        allowed = ("did", "within", "min_count") if kind == "did" else ("did_not", "within")
        ok = True
        for key in spec:
            if key not in allowed:
                self.problem((*path, key), f"unknown key {key!r}; a {kind} guard takes {', '.join(allowed)}")
                ok = False
        pattern = self.pattern(spec[kind], (*path, kind), activity_only=True)
        within = None
        if "within" not in spec:
            self.problem(path, f"a {kind} guard needs within: a duration such as 1h")
        else:
            within = self.duration(spec["within"], (*path, "within"))
        min_count = spec.get("min_count", 1)
        if not _positive_int(min_count):
            self.problem((*path, "min_count"), f"min_count takes a whole number of at least 1, not {min_count!r}")
            ok = False
        if pattern is None or within is None or not ok:
            return None
        text = f"{kind} {pattern.text} within {spec['within']}"
        if kind == "did" and min_count != 1:
            text += f" min_count {min_count}"
        return ActivityGuard(pattern, within, min_count, kind == "did_not", text)

    # -- triggers --------------------------------------------------------------------

    def trigger(self, trigger_id: Any, spec: Any, actions: dict[str, Any]) -> Trigger | None:
        path: Path = ("triggers", str(trigger_id))
        self.current = str(trigger_id)
        if not isinstance(trigger_id, str) or not _TRIGGER_ID.fullmatch(trigger_id):
            self.problem(path, "a trigger id uses letters, digits, _, . and - only")
            return None
        if not isinstance(spec, dict):
            self.problem(path, "a trigger is a mapping such as {when: add_to_cart, unless: purchase, within: 24h}")
            return None
        shapes: list[Shape] = []
        if "inactive" in spec:
            shapes.append("inactivity")
        if "when" in spec:
            shapes.append("absence" if "unless" in spec else "count")
        if not shapes:
            self.problem(
                (*path, "when"),
                "missing: a trigger needs one shape: when (on event or count), when + unless + within "
                "(absence), or inactive (inactivity)",
            )
            return None
        if len(shapes) > 1:
            self.problem((*path, "inactive"), "a trigger has exactly one shape; inactive cannot stand beside when")
            return None
        shape = shapes[0]
        ok = True
        allowed = SHAPE_KEYS[shape] + COMMON_KEYS
        for key in spec:
            if key in allowed:
                continue
            ok = False
            if key == "restart":
                self.problem((*path, key), "restart belongs to absence triggers only (when + unless + within)")
            elif any(key in keys for keys in SHAPE_KEYS.values()):
                self.problem(
                    (*path, key), f"{key} does not belong to the {shape} shape; allowed here: {', '.join(allowed)}"
                )
            else:
                self.problem((*path, key), f"unknown key {key!r}; allowed here: {', '.join(allowed)}")
        fields: dict[str, Any] = {}
        if shape == "inactivity":
            fields["inactive"] = self.duration(spec["inactive"], (*path, "inactive"))
            if "of" in spec:
                fields["of"] = self.pattern(spec["of"], (*path, "of"), activity_only=True)
        else:
            fields["when"] = self.pattern(spec["when"], (*path, "when"))
            if shape == "absence":
                fields["unless"] = self.pattern(spec["unless"], (*path, "unless"))
                if "within" not in spec:
                    self.problem(path, "an absence trigger needs within: how long to wait, such as 24h")
                    ok = False
                restart = spec.get("restart", False)
                if not isinstance(restart, bool):
                    self.problem((*path, "restart"), f"restart takes true or false, not {restart!r}")
                    ok = False
                fields["restart"] = restart is True
            else:
                count = spec.get("count", 1)
                if not _positive_int(count):
                    self.problem((*path, "count"), f"count takes a whole number of at least 1, not {count!r}")
                    ok = False
                fields["count"] = count
            if "within" in spec:
                fields["within"] = self.duration(spec["within"], (*path, "within"))
            if "key" in spec:
                fields["key"] = self.path_text(spec["key"], (*path, "key"))
                if fields["key"] is not None:
                    fields["key_get"] = compile_path(fields["key"])
        if "cooldown" in spec:
            fields["cooldown"] = self.duration(spec["cooldown"], (*path, "cooldown"), positive=False)
        if "if" in spec:
            fields["guards"] = self.guards(spec["if"], (*path, "if"))
        if "description" in spec:
            if not isinstance(spec["description"], str):
                self.problem((*path, "description"), "description takes text")
                ok = False
            fields["description"] = spec["description"]
        if "actions" in spec:
            fields["actions"] = self.action_refs(spec["actions"], (*path, "actions"), actions)
        if "holdout" in spec:
            fields["holdout"] = self.delivery.holdout(spec["holdout"], (*path, "holdout"))
        if "goal" in spec:
            fields["goal"] = self.delivery.goal(spec["goal"], (*path, "goal"))
        present = {k: v for k, v in fields.items() if not (v is None and k in spec)}
        if len(present) != len(fields) or not ok:
            return None
        return Trigger(id=trigger_id, shape=shape, line=self.source.line(path), source=dict(spec), **present)

    def action_refs(self, value: Any, path: Path, actions: dict[str, Any]) -> tuple[str, ...] | None:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            self.problem(path, "actions takes an action id or a list of them")
            return None
        unknown = [v for v in items if v not in actions]
        if unknown:
            known = ", ".join(actions) or "none are defined"
            self.problem(path, f"unknown action {', '.join(unknown)}; the actions section defines: {known}")
            return None
        return tuple(items)

    # -- document --------------------------------------------------------------------

    def rules(self) -> Rules | None:
        data = self.source.data
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problem((), "a rules file is a mapping with settings, triggers and actions")
            return None
        for key in data:
            if key not in TOP_KEYS:
                self.problem((str(key),), f"unknown section {key!r}; a rules file has {', '.join(TOP_KEYS)}")
        settings = self.settings(data.get("settings") or {})
        raw_actions = data.get("actions") or {}
        actions = self.delivery.actions(raw_actions)
        declared = raw_actions if isinstance(raw_actions, dict) else {}
        triggers_spec = data.get("triggers")
        if not isinstance(triggers_spec, dict) or not triggers_spec:
            self.problem(("triggers",), "triggers is a mapping from trigger id to trigger, with at least one")
            triggers_spec = {}
        triggers = [self.trigger(tid, spec, declared) for tid, spec in triggers_spec.items()]
        self.current = None
        if settings is None or self.problems:
            return None
        return Rules(settings, tuple(t for t in triggers if t is not None), actions, self.source.filename)

    def settings(self, spec: Any) -> Settings | None:
        if not isinstance(spec, dict):
            self.problem(("settings",), "settings is a mapping")
            return None
        values: dict[str, Any] = {}
        for key, value in spec.items():
            if key not in SETTINGS_KEYS:
                self.problem(("settings", str(key)), f"unknown setting {key!r}; allowed: {', '.join(SETTINGS_KEYS)}")
                continue
            if key == "frequency_cap":
                values["frequency_caps"] = self.delivery.frequency_caps(value)
            elif key == "quiet_hours":
                values["quiet_hours"] = self.delivery.quiet_hours(value)
            elif key == "topic":
                if isinstance(value, str) and KAFKA_TOPIC.fullmatch(value) and value not in (".", ".."):
                    values["topic"] = value
                else:
                    self.problem(
                        ("settings", "topic"), "a Kafka topic name: 1 to 249 of letters, digits, '.', '_', '-'"
                    )
                    values["topic"] = None
            elif key == "group":
                if isinstance(value, str) and 0 < len(value) <= 255 and value.isprintable():
                    values["group"] = value
                else:
                    self.problem(("settings", "group"), "a consumer group id: 1 to 255 printable characters")
                    values["group"] = None
            else:
                values[key] = self.duration(value, ("settings", key), positive=key == "dedup_window")
        if any(v is None for v in values.values()):
            return None
        return Settings(**values)


def _shown(value: Any) -> str:
    """`value` for an error message: its repr, cut short so a hostile file cannot flood the output."""
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "…" + text[-10:]


def _positive_int(value: Any) -> bool:
    return value.__class__ is int and value >= 1


def _describe(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, list):
        return "[" + ", ".join(_describe(s) for s in spec) + "]"
    if isinstance(spec, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in spec.items()) + "}"
    return json.dumps(spec)


def build_rules(source: Source, problems: list[RuleProblem], environ: Mapping[str, str] | None = None) -> Rules | None:
    """Validate `source`; append every problem found to `problems`. `${NAME}` reads `environ`."""
    return _Builder(source, problems, environ).rules()
