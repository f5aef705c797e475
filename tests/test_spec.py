"""SPEC §1-§4 as table-driven tests: every case of tests/spec_cases.py, replayed.

Also: fire_id stability, and invalid rules files reporting every problem at once with
line, trigger id and field.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from spec_cases import (
    AUTO_ID,
    BUY,
    CASES,
    Case,
    abandon,
    at,
    guarded,
    identify,
    track,
)
from tripwire.errors import RulesError
from tripwire.replay import replay_events
from tripwire.rules import parse_rules

FIELDS = ("trigger", "user_id", "key", "fire_time", "events", "suppressed")
_AUTO = re.compile(r"auto-[0-9a-f]{32}")
_HEX32 = re.compile(r"[0-9a-f]{32}")


def _json_value(value: Any) -> Any:
    """`value` with numbers as floats, so JSON-equal values (1, 1.0) compare equal and a
    boolean never equals a number."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return repr(value)


def _view(fire: dict[str, Any]) -> str:
    """A fire without its fire_id, as canonical JSON (auto messageIds made generic)."""
    shown = {name: fire.get(name, "<absent>") for name in FIELDS}
    if isinstance(shown["events"], list):
        shown["events"] = [AUTO_ID if isinstance(e, str) and _AUTO.fullmatch(e) else e for e in shown["events"]]
    return json.dumps(_json_value(shown), sort_keys=True)


def _replay(case: Case) -> Any:
    rules = parse_rules(case.rules, f"<{case.id}>")
    return replay_events(rules, [dict(e) for e in case.events], until=case.until)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text.replace("§", "S")).strip("-")


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 100


@pytest.mark.parametrize("case", CASES, ids=[_slug(c.id) for c in CASES])
def test_spec_case(case: Case) -> None:
    result = _replay(case)
    fires = list(result.fires)
    for f in fires:
        assert set(f) == {*FIELDS, "fire_id"}, f"fire keys: {sorted(f)}"
        assert isinstance(f["fire_id"], str)
        assert _HEX32.fullmatch(f["fire_id"]), f["fire_id"]
    times = [f["fire_time"] for f in fires]
    assert times == sorted(times), "fires are emitted in fire-time order"
    actual = [_view(f) for f in fires]
    expected = [_view(f) for f in case.fires]
    if case.ordered:
        assert actual == expected
    else:
        assert sorted(actual) == sorted(expected)
    for name, count in (case.stats or {}).items():
        assert getattr(result.stats, name) == count, f"stats.{name}"


def test_stats_count_every_event_read() -> None:
    events = [
        track("m1", "purchase", 0),
        track("m1", "purchase", 0),
        track("m2", "other", 100, "u2"),
        track("m3", "purchase", 1),
        {"type": "track", "event": "purchase", "messageId": "m4", "timestamp": at(100)},
    ]
    stats = replay_events(parse_rules(BUY), events).stats
    assert (stats.read, stats.accepted, stats.duplicate, stats.late, stats.bad) == (5, 2, 1, 1, 1)


# --- §4 fire_id -----------------------------------------------------------------------


def _ids(rules: str, events: list[dict[str, Any]], until: str | None = None) -> list[str]:
    result = replay_events(parse_rules(rules), events, until=until)
    return [f["fire_id"] for f in result.fires]


def test_fire_id_is_the_same_across_replays() -> None:
    """§4 replays give the same fire_id."""
    for case in CASES:
        if case.fires:
            assert [f["fire_id"] for f in _replay(case).fires] == [f["fire_id"] for f in _replay(case).fires], case.id


def test_fire_id_changes_with_fire_time() -> None:
    """§4 same trigger, user, key and events but a different fire_time: a different id."""
    events = [track("m1", "add_to_cart", 0)]
    (ten,) = _ids(abandon("10s"), events, at(30))
    (twenty,) = _ids(abandon("20s"), events, at(30))
    assert ten != twenty


def test_fire_id_depends_on_trigger_user_and_events() -> None:
    """§4 fire_id is derived from trigger, user_id, key, fire_time and events."""
    base = _ids(BUY, [track("m1", "purchase", 1)])
    other_trigger = _ids(BUY.replace("buy:", "buy2:"), [track("m1", "purchase", 1)])
    other_user = _ids(BUY, [track("m1", "purchase", 1, "u2")])
    other_event = _ids(BUY, [track("m2", "purchase", 1)])
    assert len({*base, *other_trigger, *other_user, *other_event}) == 4


def test_fire_id_ignores_everything_else() -> None:
    """§4 fire_id uses only its five inputs: not properties, arrival, suppression."""
    plain = _ids(BUY, [track("m1", "purchase", 1, props={"total": 5})])
    other_props = _ids(BUY, [track("m1", "purchase", 1, props={"total": 9})])
    passing = _ids(
        guarded("{trait: plan, eq: pro}"),
        [identify("m0", 0, traits={"plan": "pro"}), track("m1", "purchase", 1)],
    )
    suppressed = _ids(guarded("{trait: plan, eq: pro}"), [track("m1", "purchase", 1)])
    assert plain == other_props == passing == suppressed


def test_fire_id_key_1_and_1_0_agree() -> None:
    """semantics the key enters fire_id as canonical JSON, so 1 and 1.0 give one id."""
    rules = abandon("10s", "    key: properties.cart\n")
    one = _ids(rules, [track("m1", "add_to_cart", 0, props={"cart": 1})], at(10))
    one_0 = _ids(rules, [track("m1", "add_to_cart", 0, props={"cart": 1.0})], at(10))
    other = _ids(rules, [track("m1", "add_to_cart", 0, props={"cart": 2})], at(10))
    assert one == one_0 != other


def test_auto_message_ids_are_stable_across_replays() -> None:
    """semantics an event without messageId gets the same auto- id in every replay."""
    events = [{"type": "track", "event": "purchase", "userId": "u1", "timestamp": at(1)}]
    first = replay_events(parse_rules(BUY), [dict(e) for e in events]).fires
    second = replay_events(parse_rules(BUY), [dict(e) for e in events]).fires
    assert first[0]["events"] == second[0]["events"]
    assert _AUTO.fullmatch(first[0]["events"][0])


# --- §3.4 invalid rules ---------------------------------------------------------------

# Each snippet is one trigger body (under `triggers:`); `# <-` marks the lines a problem
# may name; the fields are substrings one of which the problem's field must contain.
INVALID: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "§3 an unknown trigger key",
        "bad01",
        """
        bad01:
          when: purchase
          colour: red  # <-
        """,
        ("colour",),
    ),
    (
        "§3.4 restart without unless (a key of another shape)",
        "bad02",
        """
        bad02:
          when: purchase
          count: 2
          within: 1h
          restart: true  # <-
        """,
        ("restart",),
    ),
    (
        "§3.4 of beside when (a key of another shape)",
        "bad03",
        """
        bad03:
          when: purchase
          of: [page_view]  # <-
        """,
        ("of",),
    ),
    (
        "§3.4 key beside inactive (a key of another shape)",
        "bad04",
        """
        bad04:
          inactive: 7d
          key: properties.cart_id  # <-
        """,
        ("key",),
    ),
    (
        "§3 two shapes at once (when and inactive)",
        "bad05",
        """
        bad05:  # <-
          when: purchase  # <-
          inactive: 7d  # <-
        """,
        ("when", "inactive", "=inactive when"),
    ),
    (
        "§3 two shapes at once (count and unless)",
        "bad06",
        """
        bad06:  # <-
          when: add_to_cart
          unless: purchase  # <-
          within: 1h
          count: 3  # <-
        """,
        ("count", "unless", "=count unless"),
    ),
    (
        "§3.4 a bad duration in within",
        "bad07",
        """
        bad07:
          when: add_to_cart
          unless: purchase
          within: 24 hours  # <-
        """,
        ("within",),
    ),
    (
        "§3.4 a bad duration in cooldown (not a whole number)",
        "bad08",
        """
        bad08:
          when: purchase
          cooldown: 1.5h  # <-
        """,
        ("cooldown",),
    ),
    (
        "§3.4 a bad duration in inactive",
        "bad09",
        """
        bad09:
          inactive: 7days  # <-
        """,
        ("inactive",),
    ),
    (
        "§3.4 an unknown where operator",
        "bad10",
        """
        bad10:
          when:
            event: purchase
            where:
              properties.total: {greater: 5}  # <-
        """,
        ("where", "greater"),
    ),
    (
        "§3.4 a mapping value in where is always a set of operators",
        "bad11",
        """
        bad11:
          when:
            event: purchase
            where:
              properties.address: {city: Paris}  # <-
        """,
        ("where", "city"),
    ),
    (
        "§3.4 a bad regex in matches",
        "bad12",
        """
        bad12:
          when:
            event: purchase
            where:
              properties.name: {matches: "("}  # <-
        """,
        ("where", "matches"),
    ),
    (
        "§3.4 within missing in a did guard",
        "bad13",
        """
        bad13:
          when: purchase
          if:
            - {did: view}  # <-
        """,
        ("if", "did", "within"),
    ),
    (
        "§3.4 within missing in a did_not guard",
        "bad14",
        """
        bad14:
          when: purchase
          if:
            - {did_not: view}  # <-
        """,
        ("if", "did_not", "within"),
    ),
    (
        "§3 a trigger without when (count shape)",
        "bad15",
        """
        bad15:  # <-
          count: 3
          within: 1h
        """,
        ("when", "=when"),
    ),
]


def _rules_file(snippets: list[str]) -> tuple[str, list[set[int]]]:
    """A rules file of `snippets` under `triggers:`, and each snippet's marked lines."""
    lines = ["triggers:"]
    marked: list[set[int]] = []
    for snippet in snippets:
        body = [line.rstrip() for line in snippet.strip("\n").splitlines()]
        indent = min(len(line) - len(line.lstrip()) for line in body if line.strip())
        marks: set[int] = set()
        for line in body:
            lines.append("  " + line[indent:])
            if line.endswith("# <-"):
                marks.add(len(lines))  # 1-based
        marked.append(marks)
    return "\n".join(lines) + "\n", marked


def _problems(text: str, filename: str) -> list[Any]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, filename)
    problems = caught.value.problems
    assert problems, "RulesError without problems"
    return problems


def _names_field(problem: Any, trigger: str, fields: tuple[str, ...]) -> bool:
    prefix = f"triggers.{trigger}"
    rest = problem.field[len(prefix) :] if problem.field.startswith(prefix) else problem.field
    for want in fields:
        if want.startswith("="):
            if rest == "" and all(w in problem.message for w in want[1:].split()):
                return True
        elif want in rest:
            return True
    return False


def _assert_reported(problems: list[Any], trigger: str, lines: set[int], fields: tuple[str, ...]) -> None:
    mine = [p for p in problems if p.trigger == trigger]
    shown = [str(p) for p in problems]
    assert mine, f"no problem names trigger {trigger!r}: {shown}"
    assert any(p.line in lines and _names_field(p, trigger, fields) for p in mine), (
        f"{trigger}: expected a problem on a line in {sorted(lines)} naming one of {fields}; "
        f"got {[str(p) for p in mine]}"
    )


@pytest.mark.parametrize(
    ("trigger", "snippet", "fields"),
    [pytest.param(t, s, f, id=_slug(label)) for label, t, s, f in INVALID],
)
def test_invalid_rules_name_line_trigger_and_field(trigger: str, snippet: str, fields: tuple[str, ...]) -> None:
    text, (lines,) = _rules_file([snippet])
    problems = _problems(text, "rules.yaml")
    _assert_reported(problems, trigger, lines, fields)
    assert all(p.file == "rules.yaml" for p in problems)


def test_invalid_rules_report_every_problem_at_once() -> None:
    """§5/§3.4 a rules file with many problems lists all of them in one RulesError."""
    text, marked = _rules_file([snippet for _, _, snippet, _ in INVALID])
    problems = _problems(text, "many.yaml")
    for (_, trigger, _, fields), lines in zip(INVALID, marked, strict=True):
        _assert_reported(problems, trigger, lines, fields)
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "many.yaml")
    message = str(caught.value)
    for _, trigger, _, _ in INVALID:
        assert trigger in message
    assert "many.yaml" in message


def test_invalid_setting_is_reported() -> None:
    """§3.4 settings: allowed_lateness must be a duration."""
    text = "settings:\n  allowed_lateness: soon\ntriggers:\n  buy:\n    when: purchase\n"
    problems = _problems(text, "rules.yaml")
    assert any("allowed_lateness" in p.field and p.line == 2 for p in problems), [str(p) for p in problems]


def test_every_table_rules_file_is_valid() -> None:
    """The rules of every case parse (a RulesError here is a bug in the case or parser)."""
    for case in CASES:
        parse_rules(case.rules, case.id)
