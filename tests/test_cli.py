"""The command line as a user runs it: `tripwire check` and `tripwire replay`."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

RULES = """\
settings: {allowed_lateness: 5s}
triggers:
  cart:
    description: added to cart, no purchase within 10s
    when: add_to_cart
    unless: purchase
    within: 10s
  big:
    when: {event: purchase, where: {properties.total: {gte: 500}}}
"""

EVENTS = [
    {"type": "track", "event": "add_to_cart", "userId": "u1", "messageId": "m1", "timestamp": "2026-03-01T00:00:00Z"},
    {
        "type": "track",
        "event": "purchase",
        "userId": "u2",
        "messageId": "m2",
        "timestamp": "2026-03-01T00:00:01Z",
        "properties": {"total": 900},
    },
    {
        "type": "track",
        "event": "purchase",
        "userId": "u2",
        "messageId": "m2",
        "timestamp": "2026-03-01T00:00:01Z",
        "properties": {"total": 900},
    },
]


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tripwire", *args], input=stdin, capture_output=True, timeout=60, check=False
    )


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def write_events(path: Path, lines: list[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def test_check_prints_a_summary_of_each_trigger(rules_file: Path) -> None:
    result = run("check", str(rules_file))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "cart" in out and "absence" in out and "big" in out and "2 triggers" in out


def test_check_lists_every_problem_with_file_line_trigger_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("triggers:\n  a: {when: x, within: 5x}\n  b: {inactive: 1d, key: p}\n")
    result = run("check", str(bad))
    assert result.returncode == 2
    err = result.stderr.decode()
    assert f"{bad}:2: trigger 'a', triggers.a.within: '5x' is not a duration" in err
    assert f"{bad}:3: trigger 'b', triggers.b.key: key does not belong to the inactivity shape" in err


def test_check_reports_a_missing_file(tmp_path: Path) -> None:
    result = run("check", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr.decode()


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_replay_writes_every_fire_as_one_json_line(rules_file: Path, tmp_path: Path, name: str) -> None:
    events = write_events(tmp_path / name, [json.dumps(e) for e in EVENTS])
    result = run("replay", str(rules_file), str(events))
    assert result.returncode == 0, result.stderr
    fires = [json.loads(line) for line in result.stdout.decode().splitlines()]
    # the cart window's deadline (00:00:10) is after the last event: it does not fire
    assert [(f["trigger"], f["user_id"], f["fire_time"]) for f in fires] == [("big", "u2", "2026-03-01T00:00:01.000Z")]
    assert set(fires[0]) == {"trigger", "user_id", "key", "fire_time", "fire_id", "events", "suppressed"}
    summary = result.stderr.decode()
    assert "duplicate" in summary and "accepted" in summary


def test_replay_reads_stdin_and_writes_to_out(rules_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "fires.jsonl"
    data = "\n".join(json.dumps(e) for e in EVENTS).encode()
    result = run("replay", str(rules_file), "-", "--out", str(out), stdin=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert len(out.read_text().splitlines()) == 1


def test_until_fires_timers_due_by_then(rules_file: Path, tmp_path: Path) -> None:
    events = write_events(tmp_path / "e.jsonl", [json.dumps(EVENTS[0])])
    at_end = run("replay", str(rules_file), str(events))
    assert at_end.stdout == b""
    later = run("replay", str(rules_file), str(events), "--until", "2026-03-01T00:00:10Z")
    assert json.loads(later.stdout)["trigger"] == "cart"
    bad = run("replay", str(rules_file), str(events), "--until", "tomorrow")
    assert bad.returncode == 2 and "--until" in bad.stderr.decode()


def test_bad_lines_are_reported_with_their_line_and_skipped(rules_file: Path, tmp_path: Path) -> None:
    lines = ["{not json", json.dumps({"event": "x"}), "", json.dumps(EVENTS[1]), "[1]"]
    events = write_events(tmp_path / "e.jsonl", lines)
    result = run("replay", str(rules_file), str(events))
    assert result.returncode == 0
    assert len(result.stdout.decode().splitlines()) == 1
    err = result.stderr.decode()
    assert "line 1: (json): not valid JSON" in err
    assert "line 2: userId: missing" in err
    assert "line 5: (event): an event is a JSON object" in err


def test_replay_of_a_missing_events_file_is_a_usage_error(rules_file: Path, tmp_path: Path) -> None:
    result = run("replay", str(rules_file), str(tmp_path / "none.jsonl"))
    assert result.returncode == 2
    assert "no such file" in result.stderr.decode()


def test_every_command_has_help_with_an_example() -> None:
    for command in ("check", "replay"):
        result = run(command, "--help")
        assert result.returncode == 0
        assert "Example:" in result.stdout.decode()


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--header-timeout", "soon", "'soon' is not a duration"),
        ("--body-timeout", "0s", "must be longer than zero"),
        ("--max-connections", "0", "0 is not in the range"),
    ],
)
def test_serve_refuses_a_bad_connection_limit_naming_the_flag(
    rules_file: Path, tmp_path: Path, flag: str, value: str, says: str
) -> None:
    result = run("serve", "--rules", str(rules_file), "--data", str(tmp_path / "data"), flag, value)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert flag in err and says in err, err
    assert not (tmp_path / "data").exists()
