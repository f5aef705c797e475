"""`tripwire worker` on a real Kafka broker and PostgreSQL: each partition one log, its
state and its offset committed together, a zombie fenced, bad records skipped."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import postgres_dsn
from kafka_kit import broker, fresh_topic, produce
from tripwire.cluster.partition import PartitionLog
from tripwire.cluster.worker import Worker
from tripwire.engine import Fire
from tripwire.errors import FencedError
from tripwire.replay import Replayer, replay_events, replay_store
from tripwire.rules import load_rules
from tripwire.store import open_stores
from tripwire.timestamps import format_ms

RULES = """
settings: {allowed_lateness: 2s}
triggers:
  abandon: {when: add, unless: buy, within: 1h}
  three: {when: song, count: 3, within: 1h}
  idle: {inactive: 2h, of: song}
"""
T0 = 1_772_323_200_000
HOUR = 3_600_000


class Clock:
    def __init__(self, ms: int) -> None:
        self.now = ms / 1000

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def history(users: int, start: int = T0) -> list[dict[str, Any]]:
    """A shop's and a player's events, one a second, users interleaved, in time order."""
    events: list[dict[str, Any]] = []
    at = start
    for step in range(6):
        for u in range(users):
            name = ["add", "song", "song", "buy" if u % 2 else "view", "song", "song"][step]
            events.append({"type": "track", "event": name, "userId": f"u{u}", "messageId": f"m{step}-{u}-{start}",
                           "timestamp": format_ms(at)})  # fmt: skip
            at += 1_000
    return events


def records(events: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(e["userId"].encode(), msgspec.json.encode(e)) for e in events]


def run_worker(worker: Worker, until: Any, timeout: float = 60) -> None:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not until():
            assert thread.is_alive(), "the worker stopped"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.1)
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()


def cluster_fires(schema: str) -> set[tuple[str, str | None]]:
    stores = open_stores(postgres_dsn(), schema=schema)
    try:
        return {(f.fire_id, f.suppressed) for f in stores.store.fires(limit=100_000)}
    finally:
        stores.close()


def positions(schema: str, topic: str, partitions: int) -> list[int | None]:
    found = []
    for p in range(partitions):
        stores = open_stores(postgres_dsn(), schema=schema, partition=p)
        found.append(stores.store.load_position(f"{topic}:{p}"))
        stores.close()
    return found


def replayed_partitions(rules: Path, schema: str, partitions: int) -> set[tuple[str, str | None]]:
    fires: list[Fire] = []
    for p in range(partitions):
        stores = open_stores(postgres_dsn(), schema=schema, partition=p)
        replay_store(Replayer(load_rules(rules), fires.append), stores.store, None)
        stores.close()
    return {(f.fire_id, f.suppressed) for f in fires}


def test_a_topic_filled_before_the_worker_starts_gives_the_fires_of_a_replay(rules: Path, schema: str) -> None:
    events = history(30)
    with fresh_topic(3) as topic:
        produce(topic, records(events))
        clock = Clock(T0 + 4 * HOUR)  # the wall clock once caught up: every window has ended
        # Ten records a step: while it catches up, the wall clock (hours ahead) must not move
        # the watermark, or every later record would be late.
        worker = Worker(rules, bootstrap=broker(), topic=topic, postgres=postgres_dsn(),
                        group=f"g-{topic}", schema=schema, clock=clock, max_records=10)  # fmt: skip
        expected = replay_events(load_rules(rules), events, until=format_ms(int(clock.now * 1000) - 2_000 - 1))
        want = {(f["fire_id"], f["suppressed"]) for f in expected.fires}
        run_worker(worker, lambda: len(cluster_fires(schema)) >= len(want))
        assert cluster_fires(schema) == want
        assert positions(schema, topic, 3) and sum(p or 0 for p in positions(schema, topic, 3)) == len(events)
        # each partition's log replays to exactly its fires
        assert replayed_partitions(rules, schema, 3) == want
        # and `tripwire fires --postgres --json` prints them as a replay does (SPEC §4)
        printed = subprocess.run(
            [sys.executable, "-m", "tripwire", "fires", "--postgres", postgres_dsn(), "--schema", schema, "--json",
             "--limit", "0"], check=True, capture_output=True, timeout=60,
        ).stdout.splitlines()  # fmt: skip
        by_id = {f["fire_id"]: f for f in map(msgspec.json.decode, printed)}
        assert len(by_id) == len(printed) and by_id == {f["fire_id"]: f for f in expected.fires}
        # `tripwire replay --postgres` replays each partition's log: the same fires again
        replayed = subprocess.run(
            [sys.executable, "-m", "tripwire", "replay", str(rules), "--postgres", postgres_dsn(), "--schema", schema,
             "--kafka", broker(), "--topic", topic, "--quiet"], check=True, capture_output=True, timeout=60,
        ).stdout.splitlines()  # fmt: skip
        assert sorted(replayed) == sorted(printed)


def test_a_restarted_worker_resumes_where_its_state_is_and_repeats_nothing(rules: Path, schema: str) -> None:
    first, second = history(20), history(20, start=T0 + HOUR // 2)
    with fresh_topic(2) as topic:
        produce(topic, records(first))
        clock = Clock(T0 + HOUR // 4)
        options: dict[str, Any] = {"bootstrap": broker(), "topic": topic, "postgres": postgres_dsn(),
                                   "group": f"g-{topic}", "schema": schema, "clock": clock}  # fmt: skip
        options["max_records"] = 10  # several steps, each with its position
        one = Worker(rules, **options)
        run_worker(one, lambda: sum(p or 0 for p in positions(schema, topic, 2)) == len(first))
        produce(topic, records(second))
        clock.now = (T0 + 5 * HOUR) / 1000
        two = Worker(rules, **options)
        expected = replay_events(load_rules(rules), first + second, until=format_ms(int(clock.now * 1000) - 2_001))
        want = {(f["fire_id"], f["suppressed"]) for f in expected.fires}
        run_worker(two, lambda: len(cluster_fires(schema)) >= len(want))
        assert cluster_fires(schema) == want
        for p in range(2):  # every record decided once: no duplicate decisions from a redelivery
            stores = open_stores(postgres_dsn(), schema=schema, partition=p)
            decisions = [row.decision for row in stores.store.iter_log()]
            stores.close()
            assert decisions.count("duplicate") == 0 and decisions.count("late") == 0


def test_a_worker_that_lost_its_partition_commits_nothing(rules: Path, schema: str) -> None:
    """A zombie (paused until its partition moved, then resumed) is fenced by the new owner's claim."""
    loaded = load_rules(rules)
    old = open_stores(postgres_dsn(), schema=schema, partition=0)
    new = open_stores(postgres_dsn(), schema=schema, partition=0)
    zombie = PartitionLog(old.store, loaded, "t", 0, "zombie")
    owner = PartitionLog(new.store, loaded, "t", 0, "owner")

    class Rec:
        def __init__(self, offset: int, event: dict[str, Any]) -> None:
            self._offset, self._value = offset, msgspec.json.encode(event)

        def value(self) -> bytes:
            return self._value

        def offset(self) -> int:
            return self._offset

        def timestamp(self) -> tuple[int, int]:
            return (1, T0)

        def headers(self) -> None:
            return None

        def __repr__(self) -> str:
            return f"Rec({self._offset})"

    events = history(1)
    with pytest.raises(FencedError):
        zombie.step([Rec(0, events[0])], now=T0, end=None)
    owner.step([Rec(0, events[0])], now=T0, end=None)
    assert [row.message_id for row in new.store.iter_log()] == [events[0]["messageId"]]
    assert new.store.load_position("t:0") == 1
    old.close()
    new.close()


def test_records_that_are_no_events_are_skipped_and_counted_and_the_rest_decided(rules: Path, schema: str) -> None:
    good = history(2)
    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"u0", None),  # a tombstone
        (b"u0", b"{not json"),
        (b"u0", b"[1, 2]"),
        (b"u0", b'{"type": "track", "userId": "u0"}'),  # no event name
        (b"u0", b"[" * 5_000 + b"]" * 5_000),
        (b"u0", msgspec.json.encode({"type": "track", "event": "x", "userId": "u0", "properties": {"n": 2**70}})),
    ]
    with fresh_topic(1) as topic:
        produce(topic, bad + records(good))
        clock = Clock(T0 + 4 * HOUR)
        worker = Worker(rules, bootstrap=broker(), topic=topic, postgres=postgres_dsn(),
                        group=f"g-{topic}", schema=schema, clock=clock)  # fmt: skip
        run_worker(worker, lambda: positions(schema, topic, 1) == [len(bad) + len(good)])
        stores = open_stores(postgres_dsn(), schema=schema, partition=0)
        logged = [row.message_id for row in stores.store.iter_log()]
        stores.close()
        assert logged == [e["messageId"] for e in good]
        expected = replay_events(load_rules(rules), good, until=format_ms(int(clock.now * 1000) - 2_001))
        assert cluster_fires(schema) == {(f["fire_id"], f["suppressed"]) for f in expected.fires}


def test_the_worker_command_decides_until_sigterm_then_leaves_the_group(rules: Path, schema: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    events = history(10)
    with fresh_topic(2) as topic:
        produce(topic, records(events))
        env = {**os.environ, "TRIPWIRE_KAFKA": broker(), "TRIPWIRE_POSTGRES": postgres_dsn(), "TRIPWIRE_TOPIC": topic}
        command = [sys.executable, "-m", "tripwire", "worker", "--rules", str(rules), "--group", f"g-{topic}",
                   "--schema", schema]  # fmt: skip
        said = rules.with_name("worker.log")
        with said.open("w") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while sum(p or 0 for p in positions(schema, topic, 2)) < len(events):
                assert process.poll() is None, said.read_text()
                assert time.monotonic() < deadline, "timed out"
                time.sleep(0.2)
            rules.write_text(RULES + "  welcome: {when: signup}\n")
            process.send_signal(signal.SIGHUP)  # the rules file again, for every partition held
            while "rules reloaded" not in said.read_text():
                assert process.poll() is None and time.monotonic() < deadline, said.read_text()
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        output = said.read_text()
        assert process.returncode == 0, output
        assert "'abandon', 'three', 'idle', 'welcome'" in output, output
        assert "worker stopped" in output and '"topic": "environment"' in output.replace("'", '"')
        logged = 0
        for p in range(2):
            stores = open_stores(postgres_dsn(), schema=schema, partition=p)
            logged += len(list(stores.store.iter_log()))
            stores.close()
        assert logged == len(events)


def test_the_worker_command_names_a_missing_setting(rules: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TRIPWIRE_POSTGRES", "TRIPWIRE_KAFKA")}
    result = subprocess.run([sys.executable, "-m", "tripwire", "worker", "--rules", str(rules), "--kafka", "k:9092"],
                            check=False, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "--postgres (or TRIPWIRE_POSTGRES): required" in result.stderr


def test_an_event_that_cannot_be_saved_is_quarantined_and_the_partition_goes_on(
    rules: Path, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next poison nobody foresaw (here: logging p's event fails) is isolated as on a
    single node; the rest of the step commits, with its position."""
    from tripwire.store.postgres import PostgresBatch

    real = PostgresBatch.append_events

    def broken(self: PostgresBatch, rows: list[Any]) -> None:
        if any(row.user_id == "p" and row.decision == "accepted" for row in rows):
            raise RuntimeError("a bug in logging p")
        real(self, rows)

    monkeypatch.setattr(PostgresBatch, "append_events", broken)
    good = history(3)
    poison = {"type": "track", "event": "song", "userId": "p", "messageId": "bad", "timestamp": format_ms(T0 + 500)}
    with fresh_topic(1) as topic:
        produce(topic, [*records(good[:5]), (b"p", msgspec.json.encode(poison)), *records(good[5:])])
        clock = Clock(T0 + 4 * HOUR)
        worker = Worker(rules, bootstrap=broker(), topic=topic, postgres=postgres_dsn(),
                        group=f"g-{topic}", schema=schema, clock=clock)  # fmt: skip
        run_worker(worker, lambda: positions(schema, topic, 1) == [len(good) + 1])
        stores = open_stores(postgres_dsn(), schema=schema, partition=0)
        decisions = {row.message_id: row.decision for row in stores.store.iter_log()}
        quarantined = stores.store.quarantined()
        stores.close()
    assert decisions.pop("bad") == "quarantined" and set(decisions.values()) == {"accepted"}
    assert [(q.message_id, "a bug in logging p" in q.reason) for q in quarantined] == [("bad", True)]
    expected = replay_events(load_rules(rules), good, until=format_ms(int(clock.now * 1000) - 2_001))
    assert cluster_fires(schema) == {(f["fire_id"], f["suppressed"]) for f in expected.fires}


def test_a_quarantined_event_is_sent_through_again_from_an_ingest_node_and_applied_once(
    rules: Path, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`POST /api/quarantine/retry` on an ingest node puts the kept event back on its
    partition; the worker decides it as a new arrival and records that on the entry. A
    second retry is refused, and a retry record that comes twice is applied once."""
    import asyncio

    import httpx

    from http_harness import ADMIN, ADMIN_TOKEN, WRITE_KEY
    from tripwire.cluster.ingest import ClusterService
    from tripwire.cluster.records import RETRY_HEADER
    from tripwire.server.app import create_app
    from tripwire.server.auth import Secret
    from tripwire.store.postgres import PostgresBatch

    real = PostgresBatch.append_events
    bug = threading.Event()
    bug.set()

    def broken(self: PostgresBatch, rows: list[Any]) -> None:
        if bug.is_set() and any(row.user_id == "p" and row.decision == "accepted" for row in rows):
            raise RuntimeError("a bug in logging p")
        real(self, rows)

    monkeypatch.setattr(PostgresBatch, "append_events", broken)
    good = history(2)
    poison = {"type": "track", "event": "add", "userId": "p", "messageId": "bad",
              "timestamp": format_ms(T0 + 4 * HOUR - 1_000)}  # fmt: skip  # not late when it comes again

    def decisions() -> list[tuple[str, str]]:
        stores = open_stores(postgres_dsn(), schema=schema, partition=0)
        try:
            return [(row.message_id, row.decision) for row in stores.store.iter_log()]
        finally:
            stores.close()

    async def retry(stores: Any, topic: str) -> None:
        service = ClusterService(rules, stores, bootstrap=broker(), topic=topic)
        await service.start()
        app = create_app(service, write_keys=[Secret(WRITE_KEY)], admin_token=Secret(ADMIN_TOKEN))
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://tripwire.test") as client:
                listed = (await client.get("/api/quarantine", headers=ADMIN)).json()
                [entry] = [q["id"] for q in listed["events"]]
                answer = await client.post("/api/quarantine/retry", json={"id": entry}, headers=ADMIN)
                assert answer.status_code == 200, answer.text
                assert answer.json()["retried"] == [{"id": entry, "message_id": "bad", "decision": "queued"}]
                deadline = time.monotonic() + 30
                while not any(m == "bad" and d == "accepted" for m, d in decisions()):
                    assert time.monotonic() < deadline, decisions()
                    await asyncio.sleep(0.1)
                shown = (await client.get("/api/quarantine", headers=ADMIN)).json()["events"][0]
                assert (shown["id"], shown["retry_decision"]) == (entry, "accepted"), shown
                again = await client.post("/api/quarantine/retry", json={"id": entry}, headers=ADMIN)
                assert again.status_code == 409 and again.json()["code"] == "already_retried", again.text
                missing = await client.post("/api/quarantine/retry", json={"id": entry + 1000}, headers=ADMIN)
                assert missing.status_code == 404, missing.text
                # The same retry record once more (two nodes asked at once): a duplicate, not a second purchase.
                row = stores.partition(0).quarantine_entry(entry)
                headers = [(RETRY_HEADER, str(entry).encode())]
                produce(topic, [(b"p", bytes(row.body))], headers=headers)
        finally:
            await service.stop()

    with fresh_topic(1) as topic:
        produce(topic, [*records(good[:3]), (b"p", msgspec.json.encode(poison)), *records(good[3:])])
        clock = Clock(T0 + 4 * HOUR)
        worker = Worker(rules, bootstrap=broker(), topic=topic, postgres=postgres_dsn(),
                        group=f"g-{topic}", schema=schema, clock=clock)  # fmt: skip
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: positions(schema, topic, 1) == [len(good) + 1])
            assert ("bad", "quarantined") in decisions()
            bug.clear()  # the bug is fixed; the operator sends the event through again
            stores = open_stores(postgres_dsn(), schema=schema)
            try:
                asyncio.run(retry(stores, topic))
            finally:
                stores.close()
            wait_until(lambda: positions(schema, topic, 1) == [len(good) + 3])
            clock.now += 2 * HOUR / 1000  # p's cart, applied by the retry, is abandoned
            wait_until(lambda: any(f.user_id == "p" for f in fires_of(schema)))
        finally:
            worker.stop()
            thread.join(30)
    assert [d for m, d in decisions() if m == "bad"] == ["quarantined", "accepted", "duplicate"]
    expected = replay_events(load_rules(rules), [*good, poison], until=format_ms(int(clock.now * 1000) - 2_001))
    assert cluster_fires(schema) == {(f["fire_id"], f["suppressed"]) for f in expected.fires}
    assert ("abandon", "p") in {(f["trigger"], f["user_id"]) for f in expected.fires}


def fires_of(schema: str) -> list[Any]:
    stores = open_stores(postgres_dsn(), schema=schema)
    try:
        return stores.store.fires(limit=100_000)
    finally:
        stores.close()


def wait_until(done: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_reloaded_worker_keeps_unchanged_triggers_state_and_refuses_a_broken_file(
    rules: Path, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`Worker.reload` (SIGHUP): every held partition decides under the new rules from its
    next step, a count begun before the reload goes on, and a broken file changes nothing."""
    start = T0 + 4 * HOUR - 1_000  # just ahead of the watermark the clock gives: not late

    def track(name: str, user: str, n: int) -> tuple[bytes, bytes]:
        event = {"type": "track", "event": name, "userId": user, "messageId": f"{name}-{user}-{n}",
                 "timestamp": format_ms(start + n)}  # fmt: skip
        return user.encode(), msgspec.json.encode(event)

    with fresh_topic(1) as topic:
        produce(topic, [track("song", "u", 1), track("song", "u", 2)])
        clock = Clock(T0 + 4 * HOUR)
        worker = Worker(rules, bootstrap=broker(), topic=topic, postgres=postgres_dsn(),
                        group=f"g-{topic}", schema=schema, clock=clock)  # fmt: skip
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: positions(schema, topic, 1) == [2])
            rules.write_text(RULES + "  welcome: {when: signup}\n")
            worker.reload()
            wait_until(lambda: "rules reloaded" in capsys.readouterr().out)
            rules.write_text(RULES + "  broken: {when: signup, within: soon}\n")
            worker.reload()
            wait_until(lambda: "rules reload refused" in capsys.readouterr().out)
            produce(topic, [track("song", "u", 3), track("signup", "v", 4)])
            clock.now += 10  # past the lateness: the third song and the signup are applied
            wait_until(lambda: {(f.trigger, f.user_id) for f in fires_of(schema)} >= {("three", "u"), ("welcome", "v")})
        finally:
            worker.stop()
            thread.join(30)
    assert not any(f.trigger == "broken" for f in fires_of(schema))
