"""Failover on a real broker and PostgreSQL: `tripwire worker` processes killed (SIGKILL)
while their partitions have records coming, and every record decided as a replay would.

The workers run the real command with the wall clock, so the events are stamped with it
as they are sent, and the windows are seconds long. A worker's session timeout is the
command's fixed 10 s, so a killed worker's partitions move after about that long.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg import sql

from conftest import postgres_dsn
from kafka_kit import broker, fresh_topic, produce
from tripwire.engine.snapshot import saved_watermark
from tripwire.store import open_stores
from tripwire.timestamps import format_ms

RULES = """
settings: {allowed_lateness: 3s}
triggers:
  abandon: {when: add, unless: buy, within: 3s}
  three: {when: song, count: 3, within: 5s}
  idle: {inactive: 4s, of: song}
"""
PARTITIONS = 4
SESSION_S = 10  # the worker's session timeout (not a flag of the command)


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


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
            self.process.kill()
            self.process.wait(10)
            raise


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


def _now_records(count: int, user: str) -> list[tuple[bytes | None, bytes | None]]:
    """`count` events of `user` stamped with the wall clock, a millisecond apart."""
    now = int(time.time() * 1000)
    events = [{"type": "track", "event": "song", "userId": user, "messageId": f"{user}-{now}-{i}",
               "timestamp": format_ms(now + i)} for i in range(count)]  # fmt: skip
    return [(user.encode(), msgspec.json.encode(e)) for e in events]


def test_a_partition_back_with_a_worker_that_held_it_before_catches_up_before_it_follows_the_clock(
    rules: Path, schema: str, tmp_path: Path
) -> None:
    """The consumer keeps a partition's cached end from an earlier assignment: the worker
    getting the partition back must not take that for the end and go live while records
    produced in the meantime wait (they would all be late)."""
    with fresh_topic(2) as topic:
        first = WorkerProcess(rules, topic, schema, tmp_path, 0)
        workers = [first]
        try:
            produce(topic, _now_records(5, "a"), partition=0)
            produce(topic, _now_records(5, "b"), partition=1)
            wait(lambda: [pos for pos, _ in progress(schema, topic, 2).values()] == [5, 5], "the first worker", 40,
                 workers)  # fmt: skip
            second = WorkerProcess(rules, topic, schema, tmp_path, 1)
            workers.append(second)
            wait(lambda: second.pid in holders(schema).values(), "a partition for the second", 40, workers)
            moved = next(p for p, pid in holders(schema).items() if pid == second.pid)
            produce(topic, _now_records(5, "c"), partition=moved)  # past the end the first worker saw
            wait(lambda: progress(schema, topic, 2)[moved][0] == 10, "the second worker", 30, workers)
            second.signal(signal.SIGKILL)
            for _ in range(4):  # while the partition waits for the session to time out
                produce(topic, _now_records(5, "d"), partition=moved)
                time.sleep(1)
            wait(lambda: holders(schema).get(moved) == first.pid, "the partition back", SESSION_S + 30, workers)
            wait(lambda: progress(schema, topic, 2)[moved][0] == 30, "the backlog", 30, workers)
            assert first.stop() == 0
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait(10)
        assert len(logs(schema, 2)[moved]) == 30
        assert not_accepted(schema, moved) == []
