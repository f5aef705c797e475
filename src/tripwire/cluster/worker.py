"""`tripwire worker`: consume a Kafka topic in a consumer group, one log per partition.

Kafka does the distribution: the group's members share the topic's partitions
(cooperative rebalancing, so a member joining or leaving moves only the partitions it
must), and a member that dies loses its partitions to the others after the session
timeout. Each partition a worker takes is a `PartitionLog` on PostgreSQL: the worker
claims it (fencing the previous owner), rebuilds its engine, and resumes at the offset
saved with its state, never at the group's committed offset, which is only written for
monitoring (`kafka-consumer-groups.sh --describe` shows the lag).

When PostgreSQL cannot be reached (a restart, a failover), the partitions whose step or
opening failed are paused, not given up: the worker stays in the group, keeps polling, and
tries each again (0.5 s, doubling to 5 s) until the store answers; then it rebuilds the
partition from the store and seeks back to the saved position, so what was read but not
committed is read again and nothing is decided twice. The broker away is librdkafka's to
ride out: it reconnects, and a partition that moved meanwhile is reassigned and reopened.

Stopping leaves the group in two steps, each bounded (LEAVE_S): unsubscribe and keep
polling until the revocation has run and nothing is assigned, then close. Closing a
cooperative consumer while an assignment is still being handed over can block for good
in librdkafka (its issue 4527); if either step outlasts its bound the worker says so and
exits anyway: its state is committed, and the group moves its partitions after the
session timeout, fenced by the epochs as after a crash.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from tripwire.cluster.partition import PartitionLog
from tripwire.errors import FencedError, RulesError, StoreUnavailableError
from tripwire.rules import Rules, load_rules
from tripwire.store import Stores, open_stores

log = structlog.get_logger("tripwire.cluster")
# librdkafka's "no offset known yet" for a high watermark not fetched so far.
_UNKNOWN = -1001
_END_TIMEOUT_S = 2.0  # asking the broker for a partition's end after an assignment
_RETRY_FIRST_S = 0.5  # a partition whose store is away is tried again after this, doubling
_RETRY_MOST_S = 5.0
# librdkafka's statistics (every STATS_MS) say whether each partition's leader answers: an
# end offset older than STALE_S is not trusted to say the partition is caught up.
STATS_MS = 500
STALE_S = 2.0
LEAVE_S = 10.0  # each step of leaving the group (revocation, close) waits at most this


class _BrokerStats(msgspec.Struct):
    nodeid: int = -1
    state: str = ""


class _PartitionStats(msgspec.Struct):
    leader: int = -1
    fetch_state: str = ""


class _TopicStats(msgspec.Struct):
    partitions: dict[str, _PartitionStats] = {}


class _Stats(msgspec.Struct):
    """The part of librdkafka's statistics JSON the worker reads (STATISTICS.md of librdkafka)."""

    brokers: dict[str, _BrokerStats] = {}
    topics: dict[str, _TopicStats] = {}


@dataclass
class _Waiting:
    """A held partition that cannot be opened or stepped while the store is away; paused."""

    epoch: int | None  # the claim it had, checked when it opens again; None: never claimed
    at: float  # when to try again (monotonic)
    delay: float
    error: str


def consumer_settings(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    """The consumer's settings: manual offsets (they live in PostgreSQL), cooperative rebalancing."""
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": f"tripwire-worker-{socket.gethostname()}-{os.getpid()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "logger": logging.getLogger("tripwire.kafka"),  # librdkafka's lines through tripwire's logging
        "statistics.interval.ms": STATS_MS,
    }
    settings.update(extra)
    return settings


class Worker:
    """A member of the consumer group `group` on `topic`, keeping each partition it holds."""

    def __init__(
        self,
        rules_path: str | Path,
        *,
        bootstrap: str,
        topic: str,
        postgres: str,
        group: str = "tripwire",
        schema: str = "tripwire",
        clock: Callable[[], float] = time.time,
        max_records: int = 2_000,
        poll_seconds: float = 0.1,
        kafka_settings: dict[str, Any] | None = None,
    ) -> None:
        self.rules_path = Path(rules_path)
        self.rules: Rules = load_rules(self.rules_path)
        self.topic = topic
        self.postgres = postgres
        self.schema = schema
        self.clock = clock
        self.max_records = max_records
        self.poll_seconds = poll_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.settings = consumer_settings(bootstrap, group, **(kafka_settings or {}))
        self.partitions: dict[int, PartitionLog] = {}
        self.waiting: dict[int, _Waiting] = {}  # held, paused until the store answers
        self._ends: dict[int, int] = {}  # each held partition's end as the broker gave it after the assignment
        self._answered: dict[int, float] = {}  # when each partition's leader was last seen up and fetching
        self._stores: Stores | None = None
        self._stopping = threading.Event()
        self._reloading = threading.Event()
        self.left = False  # the group was left cleanly when `run` returned (else: after the session timeout)

    def stop(self) -> None:
        """Finish the records in hand, commit them, leave the group (from any thread, or a signal)."""
        self._stopping.set()

    def reload(self) -> None:
        """Read the rules file again between two polls (from any thread, or a signal: SIGHUP)."""
        self._reloading.set()

    def run(self, settings_from: dict[str, str] | None = None) -> None:
        """Consume until `stop()`; each poll's records are decided and committed partition by partition.

        `settings_from` (where each setting came from) goes into the start log line."""
        self._stores = open_stores(self.postgres, schema=self.schema)  # one pool for every partition held
        consumer = Consumer({**self.settings, "stats_cb": self._statistics})
        consumer.subscribe([self.topic], on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lost)
        log.info("worker started", topic=self.topic, group=self.settings["group.id"], owner=self.owner,
                 schema=self.schema, settings_from=settings_from or {})  # fmt: skip
        try:
            while not self._stopping.is_set():
                if self._reloading.is_set():
                    self._reloading.clear()
                    self._reload_rules()
                self._poll(consumer)
        finally:
            self.left = self._leave(consumer)  # the others take the partitions at once
            for partition in [*self.partitions, *self.waiting]:
                self._release(partition)
            self._stores.close()
            log.info("worker stopped", owner=self.owner, left_the_group=self.left)

    def _reload_rules(self) -> None:
        """The rules file again, for every partition held and every one taken from now on; a
        file with problems is refused and the running rules stay (as `POST /api/rules/reload`)."""
        try:
            rules = load_rules(self.rules_path)
        except (RulesError, OSError) as exc:
            problems = [str(p) for p in exc.problems] if isinstance(exc, RulesError) else [str(exc)]
            log.error("rules reload refused; the running rules stay", file=str(self.rules_path), problems=problems)
            return
        self.rules = rules
        for plog in self.partitions.values():
            plog.reload(rules)  # the state of an unchanged trigger stays; the next step saves what changed
        log.info("rules reloaded", triggers=[t.id for t in rules.triggers], partitions=sorted(self.partitions))

    def _leave(self, consumer: Consumer) -> bool:
        """Unsubscribe, poll until the revocation ran, close; False if a step outlasted LEAVE_S."""
        deadline = time.monotonic() + LEAVE_S
        try:
            consumer.unsubscribe()
            while consumer.assignment() and time.monotonic() < deadline:
                consumer.consume(num_messages=self.max_records, timeout=0.1)  # runs the revocation; records dropped
        except KafkaException as exc:
            log.info("unsubscribing failed; closing", error=str(exc))
        if consumer.assignment():
            log.warning("the revocation did not finish in time; closing anyway", seconds=LEAVE_S)
        closing = threading.Thread(target=consumer.close, name="kafka-close", daemon=True)
        closing.start()
        closing.join(LEAVE_S)
        if closing.is_alive():
            log.warning("leaving the consumer group did not finish in time; the group will move this "
                        "worker's partitions after the session timeout", seconds=LEAVE_S)  # fmt: skip
            return False
        return True

    def _poll(self, consumer: Consumer) -> None:
        if self.waiting:
            self._reopen(consumer)
        messages = consumer.consume(num_messages=self.max_records, timeout=self.poll_seconds)
        records: dict[int, list[Message]] = defaultdict(list)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka error", error=str(error))
                continue
            partition = message.partition()
            if partition is not None and partition in self.partitions:
                records[partition].append(message)
        now = int(self.clock() * 1000)
        committed: list[TopicPartition] = []
        for partition, plog in list(self.partitions.items()):
            mine = records.get(partition, [])
            mine = [m for m in mine if (m.offset() or 0) >= plog.position]  # a redelivery after a seek
            try:
                plog.step(mine, now=now, end=self._end(consumer, partition))
            except FencedError as exc:
                log.warning(
                    "partition taken over by another worker; dropping it", partition=plog.source, error=str(exc)
                )
                self._release(partition)
                continue
            except StoreUnavailableError as exc:
                self._wait(consumer, partition, plog.epoch, exc)
                continue
            if mine:
                committed.append(TopicPartition(self.topic, partition, plog.position))
        if committed:
            try:  # for monitoring only: the position that counts is the one saved with the state
                consumer.commit(offsets=committed, asynchronous=True)
            except KafkaException as exc:
                log.info("offset commit for monitoring failed", error=str(exc))

    def _statistics(self, report: str) -> None:
        """librdkafka's statistics: note the partitions whose leader is up and fetched from."""
        try:
            stats = msgspec.json.decode(report, type=_Stats)
        except msgspec.DecodeError as exc:
            log.info("unreadable consumer statistics", error=str(exc))
            return
        up = {broker.nodeid for broker in stats.brokers.values() if broker.state == "UP"}
        topic = stats.topics.get(self.topic)
        if topic is None:
            return
        now = time.monotonic()
        for number, part in topic.partitions.items():
            if part.leader in up and part.fetch_state == "active" and number.isdigit():
                self._answered[int(number)] = now

    def _end(self, consumer: Consumer, partition: int) -> int | None:
        """The partition's end offset as the last fetch saw it, None while unknown or stale.

        Stale: the partition's leader has not been seen up and fetched from for STALE_S (the
        broker away, a restart), so records it acknowledged meanwhile may not have been read.

        The cached end is kept by the consumer across assignments: for a partition this
        worker held before, it is where the partition ended then, and a position the
        other owner left past it would look caught up and make every record since late.
        So the first call after an assignment asks the broker (one round trip), and the
        end is never taken below that answer; until the broker answers, it is unknown."""
        tp = TopicPartition(self.topic, partition)
        floor = self._ends.get(partition)
        if floor is not None and time.monotonic() - self._answered.get(partition, -STALE_S) > STALE_S:
            return None
        if floor is None:
            try:
                _, high = consumer.get_watermark_offsets(tp, timeout=_END_TIMEOUT_S, cached=False)
            except KafkaException as exc:
                log.info("partition end not known yet", partition=f"{self.topic}:{partition}", error=str(exc))
                return None
            if high == _UNKNOWN:
                return None
            floor = self._ends[partition] = int(high)
            self._answered[partition] = time.monotonic()  # the broker just answered for it
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        return floor if high == _UNKNOWN else max(floor, int(high))

    # -- rebalancing ---------------------------------------------------------------------

    def _open(self, partition: int, epoch: int | None) -> PartitionLog:
        assert self._stores is not None
        store = self._stores.partition(partition)
        return PartitionLog(store, self.rules, self.topic, partition, self.owner, epoch=epoch)

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        unopened: list[TopicPartition] = []
        for tp in partitions:
            self._ends.pop(tp.partition, None)  # asked again: the cached one may be from an earlier assignment
            try:
                plog = self._open(tp.partition, None)
            except StoreUnavailableError as exc:
                tp.offset = OFFSET_INVALID  # sought to the saved position once it opens
                unopened.append(tp)
                self.waiting[tp.partition] = self._waiting(tp.partition, None, exc, None)
                continue
            self.partitions[tp.partition] = plog
            tp.offset = plog.position
        consumer.incremental_assign(partitions)
        opened = [tp for tp in partitions if tp.partition in self.partitions]
        if opened:
            consumer.resume(opened)  # a partition paused when it was last held here starts fetching again
        if unopened:
            consumer.pause(unopened)

    # -- the store away ------------------------------------------------------------------

    def _waiting(self, partition: int, epoch: int | None, exc: Exception, before: _Waiting | None) -> _Waiting:
        delay = _RETRY_FIRST_S if before is None else min(before.delay * 2, _RETRY_MOST_S)
        if before is None:
            log.warning("the store cannot be reached; partition paused until it answers",
                        partition=f"{self.topic}:{partition}", error=str(exc))  # fmt: skip
        return _Waiting(epoch, time.monotonic() + delay, delay, str(exc))

    def _wait(self, consumer: Consumer, partition: int, epoch: int, exc: Exception) -> None:
        """The step of `partition` failed for the store: drop its spent engine, pause it."""
        self.partitions.pop(partition, None)
        self.waiting[partition] = self._waiting(partition, epoch, exc, None)
        consumer.pause([TopicPartition(self.topic, partition)])

    def _reopen(self, consumer: Consumer) -> None:
        """Open each waiting partition that is due; seek it to the saved position and resume it."""
        for partition, waiting in list(self.waiting.items()):
            if waiting.at > time.monotonic():
                continue
            try:
                plog = self._open(partition, waiting.epoch)
                tp = TopicPartition(self.topic, partition, plog.position)
                consumer.seek(tp)  # back to what the store has: what was read and not committed comes again
            except FencedError as exc:
                log.warning("partition taken over by another worker while the store was away; dropping it",
                            partition=f"{self.topic}:{partition}", error=str(exc))  # fmt: skip
                del self.waiting[partition]
                continue
            except (StoreUnavailableError, KafkaException) as exc:
                self.waiting[partition] = self._waiting(partition, waiting.epoch, exc, waiting)
                break  # at most one attempt (it may wait for the pool's timeout) between two polls
            del self.waiting[partition]
            self.partitions[partition] = plog
            consumer.resume([tp])
            log.info("the store answers again; partition resumed", partition=plog.source, position=plog.position)

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._release(tp.partition)
            self.waiting.pop(tp.partition, None)
        consumer.incremental_unassign(partitions)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost (session timed out); another worker owns them now", partitions=[
            tp.partition for tp in partitions
        ])  # fmt: skip
        self._revoke(consumer, partitions)

    def _release(self, partition: int) -> None:
        self._ends.pop(partition, None)
        self._answered.pop(partition, None)
        if self.waiting.pop(partition, None) is not None:
            log.info("partition released while waiting for the store", partition=f"{self.topic}:{partition}")
        plog = self.partitions.pop(partition, None)
        if plog is not None:
            log.info("partition released", partition=plog.source, position=plog.position, **vars(plog.stats))
