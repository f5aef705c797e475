"""Failover on a real broker and PostgreSQL: `tripwire worker` processes under load, killed
(SIGKILL) and paused (SIGSTOP) at random moments; at the end every record decided once,
the fires in PostgreSQL those of a replay of each partition, none recorded twice.

The workers run the real command with the wall clock, so the events are stamped with it
as they are sent, and the windows are seconds long. A worker's session timeout is the
command's fixed 10 s, so a killed worker's partitions move after about that long.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import msgspec
import pytest

from cluster_kit import (
    PARTITIONS,
    SESSION_S,
    Load,
    Settled,
    WorkerProcess,
    assert_exactly_once,
    cluster_fires,
    holders,
    logs,
    not_accepted,
    progress,
    query,
    seeded,
    topic_records,
    wait,
    write_rules,
)  # fmt: skip
from kafka_kit import fresh_topic, produce
from tripwire.timestamps import format_ms


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    return write_rules(tmp_path)


@pytest.fixture
def rng() -> random.Random:
    return seeded()


def test_workers_killed_at_random_moments_under_load_decide_every_record_once(
    rules: Path, schema: str, tmp_path: Path, rng: random.Random
) -> None:
    started = time.monotonic()
    with fresh_topic(PARTITIONS) as topic:
        workers = [WorkerProcess(rules, topic, schema, tmp_path, n) for n in range(3)]
        killed: list[int] = []
        try:
            with Load(topic, rng) as load:
                # all three members hold partitions and have committed steps
                wait(lambda: len(set(holders(schema).values())) == 3, "three workers sharing the topic", 40, workers)
                for _ in range(3):
                    time.sleep(rng.uniform(1.0, 4.0))
                    victim = rng.choice([w for w in workers if w.process.poll() is None])
                    victim.signal(signal.SIGKILL)
                    killed.append(victim.pid)
                    workers.append(WorkerProcess(rules, topic, schema, tmp_path, len(workers)))
                time.sleep(rng.uniform(1.0, 3.0))
            sent = load.sent
            wait(Settled(schema, topic), "every record decided and every timer final", 60, workers)
            live = [w for w in workers if w.pid not in killed]
            assert [w.stop() for w in live] == [0] * len(live), [w.output() for w in live]
            fires = assert_exactly_once(rules, schema, topic)
            assert sum(len(r) for r in topic_records(topic).values()) == sent
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait(10)
        epochs = query(f'SELECT sum(epoch) FROM "{schema}".owner')[0][0]
    assert epochs > PARTITIONS, "no partition ever moved"
    assert {f[1] for f in fires} == {"abandon", "three", "idle"}
    print(f"{sent} events, {len(fires)} fires, {epochs} claims, {time.monotonic() - started:.1f}s")


def backends(name: str) -> list[str]:
    """The states of the PostgreSQL sessions of the worker whose application_name is `name`."""
    return [state for (state,) in query("SELECT state FROM pg_stat_activity WHERE application_name = %s", name)]


def pause_between_transactions(worker: WorkerProcess, rng: random.Random) -> None:
    """SIGSTOP `worker` at a moment none of its transactions is open (else resume and try again)."""
    for _ in range(200):
        worker.signal(signal.SIGSTOP)
        time.sleep(0.1)
        if all(state == "idle" for state in backends(worker.name)):
            return
        worker.signal(signal.SIGCONT)
        time.sleep(rng.uniform(0.0, 0.2))
    raise AssertionError("could not pause the worker between two transactions")


def test_a_paused_worker_resumed_after_its_partitions_moved_commits_nothing(
    rules: Path, schema: str, tmp_path: Path, rng: random.Random
) -> None:
    started = time.monotonic()
    with fresh_topic(PARTITIONS) as topic:
        zombie, other = (WorkerProcess(rules, topic, schema, tmp_path, n) for n in range(2))
        workers = [zombie, other]
        try:
            with Load(topic, rng):
                wait(lambda: set(holders(schema).values()) == {zombie.pid, other.pid}, "two workers", 40, workers)
                time.sleep(rng.uniform(0.5, 2.0))
                pause_between_transactions(zombie, rng)
                held = sorted(p for p, pid in holders(schema).items() if pid == zombie.pid)
                assert held, "the paused worker held no partition"
                # its session times out; the other takes its partitions and decides what comes
                wait(lambda: set(holders(schema).values()) == {other.pid}, "the takeover", SESSION_S + 30, workers)
                time.sleep(rng.uniform(1.0, 2.0))
            wait(Settled(schema, topic), "every record decided and every timer final", 60, workers)
            before = (logs(schema), {p: pos for p, (pos, _) in progress(schema, topic).items()}, cluster_fires(schema))
            zombie.signal(signal.SIGCONT)
            wait(lambda: "partitions lost" in zombie.output() or "taken over" in zombie.output(),
                 "the resumed worker to notice", 30, workers)  # fmt: skip
            time.sleep(2)
            after = (logs(schema), {p: pos for p, (pos, _) in progress(schema, topic).items()}, cluster_fires(schema))
            assert after == before, "the resumed worker changed a log, a position or the fires"
            with Load(topic, rng):  # both go on deciding
                time.sleep(2)
            wait(Settled(schema, topic), "every record decided and every timer final", 60, workers)
            assert [w.stop() for w in workers] == [0, 0], [w.output() for w in workers]
            fires = assert_exactly_once(rules, schema, topic)
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait(10)
    noticed = [line for line in zombie.output().splitlines() if "partitions lost" in line or "taken over" in line]
    print(f"held {held}; {len(fires)} fires; {time.monotonic() - started:.1f}s; the zombie:", *noticed, sep="\n")


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
