"""Helpers of the cluster tests on a real broker and PostgreSQL: `tripwire worker`
processes, a load of events stamped with the wall clock, and the check that every record
was decided once and the fires are those of a replay of each partition.

The addresses are read from the environment (`TRIPWIRE_KAFKA`, `TRIPWIRE_POSTGRES`) at
each call, so a test that starts services of its own points these helpers at them.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from confluent_kafka import Consumer, TopicPartition

from conftest import postgres_dsn
from kafka_kit import broker
from tripwire.arrival import receive_event
from tripwire.cluster.producer import EventProducer
from tripwire.engine import Fire
from tripwire.engine.snapshot import saved_watermark
from tripwire.replay import Replayer, replay_events, replay_store
from tripwire.rules import Rules, load_rules
from tripwire.store import open_stores
from tripwire.timestamps import format_ms, parse_ms

RULES = """
settings: {allowed_lateness: 3s}
triggers:
  abandon: {when: add, unless: buy, within: 3s}
  three: {when: song, count: 3, within: 5s}
  idle: {inactive: 4s, of: song}
"""
LONGEST_MS = 5_000  # the longest window: every timer is due by then after the last event
LATENESS_MS = 3_000
PARTITIONS = 4
SESSION_S = 10  # the worker's session timeout (not a flag of the command)


def write_rules(folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(RULES)
    return path


def seeded() -> random.Random:
    seed = random.randrange(2**32)
    print(f"random seed {seed}")  # shown with a failure, to run the same moments again
    return random.Random(seed)


class WorkerProcess:
    """One `tripwire worker` command, its output in a file; `name` is its PostgreSQL application_name."""

    def __init__(self, rules: Path, topic: str, schema: str, folder: Path, number: int) -> None:
        self.name = f"failover-{schema}-{number}"
        self.output_path = folder / f"worker-{number}.log"
        env = {**os.environ, "TRIPWIRE_KAFKA": broker(), "TRIPWIRE_POSTGRES": postgres_dsn(),
               "TRIPWIRE_TOPIC": topic, "PGAPPNAME": self.name}  # fmt: skip
        command = [sys.executable, "-m", "tripwire", "worker", "--rules", str(rules), "--group", f"g-{topic}",
                   "--schema", schema]  # fmt: skip
        with self.output_path.open("w") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    def output(self) -> str:
        return self.output_path.read_text()

    def signal(self, sig: signal.Signals) -> None:
        assert self.process.poll() is None, f"worker {self.pid} exited early:\n{self.output()}"
        os.kill(self.pid, sig)

    def stop(self) -> int:
        """SIGTERM (after a SIGCONT, in case it is paused), and its exit status."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGUSR1)  # its threads' stacks into its output, to see where it hangs
            time.sleep(1)
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"worker {self.pid} did not stop within 30 s of SIGTERM:\n{self.output()[-6000:]}"
            ) from None


class Load:
    """Events for many users sent through tripwire's producer, each stamped with the wall clock
    as it is sent. One producer, so each partition holds its events in time order."""

    def __init__(self, topic: str, rng: random.Random, users: int = 120, batch: int = 8, pause: float = 0.05) -> None:
        self.topic, self.rng, self.users, self.batch, self.pause = topic, rng, users, batch, pause
        self.sent = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._failed: BaseException | None = None

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the producer did not stop"
        if self._failed is not None:
            raise self._failed

    async def _run(self) -> None:
        producer = EventProducer(broker(), self.topic)
        try:
            while not self._stopping.is_set():
                events = []
                for _ in range(self.batch):
                    now = int(time.time() * 1000)
                    name = self.rng.choice(["add", "buy", "song", "song", "view"])
                    obj = {"type": "track", "event": name, "userId": f"u{self.rng.randrange(self.users)}",
                           "timestamp": format_ms(now)}  # fmt: skip
                    events.append(receive_event(obj, now=now, received_at=format_ms(now), skew_tolerance=2_000))
                await producer.send(events)  # acknowledged by the broker, or it raises
                self.sent += len(events)
                await asyncio.sleep(self.pause)
        except BaseException as exc:  # handed to the test's thread by stop()
            self._failed = exc
        finally:
            assert producer.close() == 0


def topic_records(topic: str) -> dict[int, list[dict[str, Any]]]:
    """Every record of the topic, decoded, per partition in offset order."""
    consumer = Consumer({"bootstrap.servers": broker(), "group.id": f"check-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS) if ends[p] > 0])
        found: dict[int, list[dict[str, Any]]] = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + 30
        while any(len(found[p]) < ends[p] for p in found):
            assert time.monotonic() < deadline, "could not read the topic back"
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                assert message.error() is None, message.error()
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset == len(found[partition]), "a gap in the topic"
                found[partition].append(msgspec.json.decode(message.value() or b""))
        return found
    finally:
        consumer.close()


def query(text: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        return conn.execute(text, args).fetchall()


def holders(schema: str) -> dict[int, int]:
    """Each claimed partition and the pid of its holder (holder = host:pid:object)."""
    try:
        rows = query(f'SELECT part, holder FROM "{schema}".owner')
    except psycopg.errors.UndefinedTable:
        return {}
    return {part: int(holder.split(":")[1]) for part, holder in rows}


def progress(schema: str, topic: str, partitions: int = PARTITIONS) -> dict[int, tuple[int | None, int | None]]:
    """Each partition's committed (position, watermark)."""
    found: dict[int, tuple[int | None, int | None]] = {}
    stores = open_stores(postgres_dsn(), schema=schema)
    try:
        for p in range(partitions):
            store = stores.partition(p)
            meta = store.load_meta()
            found[p] = (store.load_position(f"{topic}:{p}"), None if meta is None else saved_watermark(meta))
    finally:
        stores.close()
    return found


def wait(until: Callable[[], object], what: str, timeout: float, workers: list[WorkerProcess]) -> None:
    """Until `until()` is true; a worker exiting (but by a SIGKILL of the test's) fails at once."""
    deadline = time.monotonic() + timeout
    while not until():
        for worker in workers:
            if worker.process.poll() is None:
                continue
            if worker.process.returncode != -signal.SIGKILL:
                raise AssertionError(f"worker {worker.pid} exited ({worker.process.returncode}):\n{worker.output()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what} ({until})"
        time.sleep(0.2)


class Settled:
    """Every record read and every timer they set final: positions at the topic's end, and
    the wall clock past the last event plus the longest window and the lateness (a worker
    saves its watermark only with a change, so the saved one may be behind)."""

    def __init__(self, schema: str, topic: str) -> None:
        self.schema, self.topic = schema, topic
        records = topic_records(topic)
        self.ends = {p: len(found) for p, found in records.items()}
        self.final = max((parse_ms(r["timestamp"]) for found in records.values() for r in found), default=0)
        self.final += LONGEST_MS + LATENESS_MS + 1_000
        self.seen: dict[int, tuple[int | None, int | None]] = {}

    def __call__(self) -> bool:
        self.seen = progress(self.schema, self.topic)
        caught_up = all(self.seen[p][0] == (end or None) for p, end in self.ends.items())
        return caught_up and time.time() * 1000 > self.final

    def __str__(self) -> str:
        return f"ends {self.ends}, (position, watermark) {self.seen}"


def logs(schema: str, partitions: int = PARTITIONS) -> dict[int, list[tuple[str, str]]]:
    """Each partition's log as (messageId, decision), in log order."""
    found = {}
    stores = open_stores(postgres_dsn(), schema=schema)
    try:
        for p in range(partitions):
            found[p] = [(row.message_id, row.decision) for row in stores.partition(p).iter_log()]
    finally:
        stores.close()
    return found


def not_accepted(schema: str, partition: int) -> list[tuple[int, str, str | None, str]]:
    """The log rows of `partition` not accepted: (index, event time, watermark it was decided at, decision)."""
    stores = open_stores(postgres_dsn(), schema=schema, partition=partition)
    try:
        rows = list(stores.store.iter_log())
    finally:
        stores.close()
    return [(i, format_ms(row.ts), None if row.watermark is None else format_ms(row.watermark), row.decision)
            for i, row in enumerate(rows) if row.decision != "accepted"]  # fmt: skip


FireKey = tuple[str, str, str, str, tuple[str, ...], str | None, int | None]


def cluster_fires(schema: str) -> list[FireKey]:
    stores = open_stores(postgres_dsn(), schema=schema)
    try:
        rows = stores.store.fires(limit=1_000_000)
    finally:
        stores.close()
    return sorted((f.fire_id, f.trigger, f.user_id, format_ms(f.fire_time), f.events, f.suppressed, f.partition)
                  for f in rows)  # fmt: skip


def _key(fire: dict[str, Any], partition: int) -> FireKey:
    return (fire["fire_id"], fire["trigger"], fire["user_id"], fire["fire_time"], tuple(fire["events"]),
            fire["suppressed"], partition)  # fmt: skip


def replay_log(rules: Rules, schema: str, partition: int) -> list[FireKey]:
    """The fires of a replay of one partition's log (with the watermarks it records)."""
    replayed: list[Fire] = []
    stores = open_stores(postgres_dsn(), schema=schema, partition=partition)
    try:
        replay_store(Replayer(rules, replayed.append), stores.store, None)
    finally:
        stores.close()
    return [_key(f.to_dict(), partition) for f in replayed]


def assert_exactly_once(rules: Path, schema: str, topic: str) -> list[FireKey]:
    """With every worker stopped: each record of the topic in its partition's log once, in
    order, accepted; the fires recorded once each, and those of a replay of each partition's
    log and of each partition's records up to its final watermark. Returns the fires."""
    records = topic_records(topic)
    logged = logs(schema)
    done = progress(schema, topic)
    loaded = load_rules(rules)
    fires = cluster_fires(schema)
    assert len({f[0] for f in fires}) == len(fires), "a fire_id recorded twice"
    from_logs: list[FireKey] = []
    from_records: list[FireKey] = []
    for p in range(PARTITIONS):
        ids = [r["messageId"] for r in records[p]]
        assert [m for m, _ in logged[p]] == ids, f"partition {p}: the log is not the topic's records once each"
        if any(d != "accepted" for _, d in logged[p]):
            odd = not_accepted(schema, p)
            raise AssertionError(f"partition {p}: {len(odd)} records not accepted (a redelivery, or late): {odd[:10]}")
        position, watermark = done[p]
        assert position == (len(ids) or None)
        from_logs += replay_log(loaded, schema, p)
        if records[p]:
            assert watermark is not None
            result = replay_events(loaded, records[p], until=format_ms(watermark - 1))
            assert result.stats.accepted == len(ids) and result.stats.late == 0 and result.stats.duplicate == 0
            from_records += [_key(f, p) for f in result.fires]
            # and every timer had fired: a replay to long after the last event adds none
            last = max(parse_ms(r["timestamp"]) for r in records[p])
            whole = replay_events(loaded, records[p], until=format_ms(last + LONGEST_MS + 60_000))
            assert sorted(_key(f, p) for f in whole.fires) == sorted(_key(f, p) for f in result.fires)
    assert fires == sorted(from_logs), "the fires differ from a replay of the partitions' logs"
    assert fires == sorted(from_records), "the fires differ from a replay of the partitions' records"
    return fires
