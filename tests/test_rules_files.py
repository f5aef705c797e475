"""Hostile and broken rules files: each is a located problem in `tripwire check` (exit 2) and
a 422 at `POST /api/rules/reload` with the running rules kept, never a traceback or a stall."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from http_harness import ADMIN, Harness, harness
from tripwire.cli import main
from tripwire.errors import RulesError
from tripwire.rules import load_rules, parse_rules
from tripwire.rules.source import MAX_FILE_BYTES

GOOD = "triggers:\n  a:\n    when: x\n"


def billion_laughs() -> str:
    lines = ["triggers:", "  a:", "    when: x", "    description: &l0 lol"]
    lines += [f"x{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def where(condition: str) -> str:
    return f"triggers:\n  a:\n    when: {{event: x, where: {{properties.p: {condition}}}}}\n"


def templated(body: str) -> bytes:
    action = f"  h: {{type: webhook, url: 'https://h.example.com', body: '{body}'}}\n"
    return ("triggers:\n  a: {when: x, actions: [h]}\nactions:\n" + action).encode()


DEEP_IF = templated("{% if x %}" * 2000 + "y" + "{% endif %}" * 2000)
DEEP_PARENTHESES = templated("{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}")
TOO_DEEP = "template error: the template is too deeply nested to compile"


def push(provider: str) -> bytes:
    return f"{GOOD}actions:\n  p: {{type: push, provider: {provider}, title: hi, body: there}}\n".encode()


# an anchor 40 deep, used 40 deep: each is fine alone, together 81 levels
DEEP_ALIAS = ("a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40).encode()


@dataclass(frozen=True)
class Bad:
    name: str
    content: bytes
    line: int | None  # the line the problem names; None when the whole file is at fault
    says: str  # a part of the message

    def __str__(self) -> str:
        return self.name


CASES = [
    Bad("invalid UTF-8", b"triggers:\n  a:\n    when: caf\xe9\n", 3, "column 14: byte e9 is not UTF-8"),
    Bad("UTF-16", "triggers:\n  a: {when: x}\n".encode("utf-16"), 1, "the file is UTF-16; save it as UTF-8"),
    Bad("NUL byte", b"triggers:\n  a:\n    when: x\x00\n", 3, "#x0000 is not allowed"),
    Bad("too large", GOOD.encode() + b"#" * MAX_FILE_BYTES, None, "larger than 1024 KiB"),
    Bad("cyclic mapping", b"triggers: &t\n  a: *t\n", 2, "alias *t is inside its own anchor &t (a cycle)"),
    Bad("cyclic sequence", b"triggers:\n  a:\n    when: &w [x, *w]\n", 3, "column 18: alias *w is inside"),
    Bad("billion laughs", billion_laughs().encode(), 9, "more than 100,000 values once aliases are expanded"),
    Bad("too many aliases", (GOOD + "    description: &d x\nz: [" + "*d, " * 1001 + "]\n").encode(), 5, "1000 aliases"),
    Bad("nested 100 deep", ("triggers: " + "[" * 100 + "]" * 100).encode(), 1, "nested more than 64 levels"),
    Bad("nested 5000 deep", ("triggers: " + "[" * 5000 + "]" * 5000).encode(), 1, "maximum nesting depth"),
    Bad("deep once expanded", DEEP_ALIAS, 2, "nested more than 64 levels deep once *a is expanded"),
    Bad("undefined alias", b"triggers:\n  a: {when: *nope}\n", 2, "undefined alias"),
    Bad("anchor twice", b"triggers:\n  a: {when: &w x, unless: &w y, within: 1h}\n", 2, "duplicate anchor"),
    Bad("integer past 64 bits", b"triggers:\n  a: {when: x, count: 18446744073709551616}\n", 2, "64 bits"),
    Bad("5000-digit integer", b"triggers:\n  a: {when: x, count: " + b"9" * 5000 + b"}\n", 2, "64 bits"),
    Bad("huge duration", b"triggers:\n  a: {when: x, within: 99999999999999999999w}\n", 2, "longer than 36500d"),
    Bad("5000-digit duration", b"triggers:\n  a: {when: x, within: " + b"9" * 5000 + b"s}\n", 2, "not a duration"),
    Bad("invalid regex", where("{matches: '(unclosed'}").encode(), 3, "not a valid regular expression"),
    Bad("catastrophic regex", where("{matches: '^(a+)+$'}").encode(), 3, "a repeat inside a repeat"),
    Bad("regex nested 499 deep", where(f"{{matches: '{'(' * 499}{')' * 499}'}}").encode(), 3, "repeated too much"),
    Bad("regex too long", where("{matches: '" + "a" * 1001 + "'}").encode(), 3, "longer than 1000 characters"),
    Bad("number as key", b"triggers:\n  a:\n    when: x\n    1: y\n", 4, "the key 1 is not text; quote it"),
    Bad("list as key", b"triggers:\n  ? [a]\n  : {when: x}\n", 2, "a mapping key must be a plain string"),
    Bad("merge key", b"triggers:\n  a: {<<: {when: x}}\n", 2, "merge keys (<<) are not supported"),
    Bad("python tag", b"triggers:\n  a: {when: !!python/object:os.system x}\n", 2, "is not supported"),
    Bad("binary tag", b"triggers:\n  a: {when: !!binary aGVsbG8=}\n", 2, "the tag !!binary is not supported"),
    Bad("bad int tag", b"triggers:\n  a: {when: x, count: !!int 12x}\n", 2, "not a whole number in 64 bits"),
    Bad("push provider a list", push("[webpush]"), 5, "provider is webpush or fcm, not a list"),
    Bad("push provider a mapping", push("{fcm: 1}"), 5, "provider is webpush or fcm, not a mapping"),
    Bad("push provider a number", push("1"), 5, "provider is webpush or fcm, not a number"),
    Bad("template with 2000 nested ifs", DEEP_IF, 4, TOO_DEEP),
    Bad("template with 2000 nested parentheses", DEEP_PARENTHESES, 4, TOO_DEEP),
]


def check(path: Path) -> Any:
    return CliRunner().invoke(main, ["check", str(path)])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_check_locates_the_problem_and_exits_2(tmp_path: Path, case: Bad) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(case.content)
    began = time.monotonic()
    result = check(path)
    assert time.monotonic() - began < 2.0, "a bad file must be refused quickly"
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    where = f"{path}:{case.line}:" if case.line is not None else f"{path}: (file)"
    assert where in result.output, result.output
    assert case.says in result.output, result.output


@pytest.mark.parametrize("case", CASES, ids=str)
def test_load_rules_reads_the_file_as_check_does(tmp_path: Path, case: Bad) -> None:
    """The service loads and reloads through load_rules: a bad encoding is a located RulesError there too."""
    path = tmp_path / "rules.yaml"
    path.write_bytes(case.content)
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(path), case.line)
    assert case.says in problem.message, problem


def test_a_utf8_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    result = check(path)
    assert result.exit_code == 0, result.output
    assert "1 triggers" in result.output


def test_anchors_and_aliases_within_the_limits_work(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("triggers:\n  a: {when: &cart add_to_cart, unless: purchase, within: 1h}\n  b: {when: *cart}\n")
    assert check(path).exit_code == 0


def test_check_in_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"triggers:\n  a:\n    when: caf\xe9\n")
    result = subprocess.run(
        [sys.executable, "-m", "tripwire", "check", str(path)], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "Traceback" not in err and f"{path}:3: (file): column 14: byte e9 is not UTF-8" in err


def test_a_template_nested_too_deeply_names_its_action_and_field_in_a_real_check(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(DEEP_IF)
    result = subprocess.run(
        [sys.executable, "-m", "tripwire", "check", str(path)], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "Traceback" not in err and f"{path}:4: actions.h.body: {TOO_DEEP}" in err, err


@pytest.fixture
async def h(tmp_path: Path) -> Any:
    async with harness(tmp_path) as started:
        yield started


async def test_a_reload_of_each_bad_file_is_422_with_the_same_problem_and_the_rules_stay(h: Harness) -> None:
    before = [t.id for t in h.service.rules.triggers]
    async with h.client() as client:
        for case in CASES:
            h.rules_path.write_bytes(case.content)
            reply = await client.post("/api/rules/reload", headers=ADMIN)
            assert reply.status_code == 422, (case.name, reply.text)
            body = reply.json()
            assert body["code"] == "invalid_rules", case.name
            (problem,) = body["problems"]
            assert problem["file"] == str(h.rules_path) and problem["line"] == case.line, (case.name, problem)
            assert case.says in problem["message"], (case.name, problem)
            assert [t.id for t in h.service.rules.triggers] == before, case.name
        h.rules_path.write_text(GOOD)
        reply = await client.post("/api/rules/reload", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    assert [t.id for t in h.service.rules.triggers] == ["a"]


# -- no input of any shape gives anything but RulesError ------------------------------------

YAML_PIECES = st.sampled_from(
    ["triggers:", "actions:", "settings:", "\n", "  ", "- ", ": ", "[", "]", "{", "}", ",", "&a ", "*a", "!!str ",
     "!!int ", "<<: ", "? ", "'", '"', "#", "|", ">", "when: x", "within: 1h", "count: 3", "\t", "\\u00e9", "1e999",
     "0x1F", "~", "null", "true", "9" * 30, "\ufeff", "\u2028", "\x85", "%YAML 1.1\n", "---\n", "...\n"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(YAML_PIECES, max_size=40).map("".join))
def test_any_text_is_rules_or_a_located_rules_error(text: str) -> None:
    try:
        parse_rules(text, "fuzz.yaml")
    except RulesError as exc:
        assert all(p.file == "fuzz.yaml" for p in exc.problems)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["1h", "0s", "99999999999999w", "x", "add_to_cart", "webhook", "http://h/", "(a+)+", "10%"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["when", "unless", "within", "count", "key", "where", "if", "trait", "did", "matches", "in",
                     "gte", "event", "type", "cooldown", "actions", "holdout", "goal", "inactive", "of", "url",
                     "restart", "min_count", "properties.p", "any", "not", "exists"]), inner, max_size=4),
    max_leaves=12)  # fmt: skip


ACTIONS = st.fixed_dictionaries(
    {"type": st.sampled_from(["webhook", "email", "slack", "push", "in_app", "airflow", "n8n", "sms"])},
    optional=dict.fromkeys(("url", "body", "headers", "smtp", "from", "subject", "text", "title", "max_attempts",
                            "timeout", "rate_limit", "vapid_private_key"), VALUES)
    | {"provider": VALUES},
)  # fmt: skip
SETTINGS = st.dictionaries(
    st.sampled_from(["allowed_lateness", "dedup_window", "frequency_cap", "quiet_hours", "x"]), VALUES, max_size=3
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trigger=VALUES, action=ACTIONS, setting=SETTINGS)
def test_any_structure_is_rules_or_a_located_rules_error(trigger: Any, action: Any, setting: Any) -> None:
    document = {"settings": setting, "triggers": {"t": trigger}, "actions": {"w": action}}
    with contextlib.suppress(RulesError):
        parse_rules(yaml.safe_dump(document), "fuzz.yaml")
