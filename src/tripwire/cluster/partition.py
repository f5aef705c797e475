"""One Kafka partition as one log: its store, its engine, its watermark and its place in the topic.

Each step decides a run of the partition's records with the decision pipeline and
commits, in one transaction, what the step changed together with the next offset to read
and a check that this worker still owns the partition (a worker that lost it, paused or
cut off from the group, then resumed, commits nothing: `FencedError`). So state and
position move together: after a crash the partition resumes exactly where its state is.

Time (SPEC §2): until the partition has caught up with the end of the topic it follows
event time alone (the watermark is the largest accepted event time minus the lateness),
so a worker started on months of history gives the fires a replay of those events gives.
From then on it follows the wall clock: the watermark is `now - allowed_lateness` when
the partition is caught up, and the receive time of the last record read minus the
lateness while it works through a burst, so records are not made late by the worker's
own delay. While the end is not known (the broker away, so records it acknowledged may not
have been read), the wall clock moves nothing. Every log row records the watermark it was
decided at, as on a single node, so a replay of the partition's log decides exactly as the
worker did. A watermark that moved without changing anything is saved too, at most once a
second.

A step the store cannot take (PostgreSQL away: `StoreUnavailableError`) leaves the engine
spent and commits nothing; the worker drops this object and opens the partition again
from the store once it answers (`PartitionLog(..., epoch=)`), so nothing half-done is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from tripwire.cluster.records import record_event, retry_entry
from tripwire.engine import Engine
from tripwire.errors import EventError
from tripwire.events import Event
from tripwire.pipeline import NOT_THE_EVENTS, Pipeline, StepResult, quarantine_kind
from tripwire.rules import Rules
from tripwire.store import Batch, Store
from tripwire.timestamps import parse_ms

if TYPE_CHECKING:
    from confluent_kafka._types import HeadersType  # what Message.headers() gives

log = structlog.get_logger("tripwire.cluster")


class Record(Protocol):
    """What a partition needs of a Kafka message (confluent_kafka.Message has it)."""

    def value(self) -> bytes | None: ...

    def offset(self) -> int | None: ...

    def timestamp(self) -> tuple[int, int]: ...

    def headers(self) -> HeadersType | None: ...


@dataclass
class PartitionStats:
    records: int = 0
    bad: int = 0
    steps: int = 0
    fires: int = 0
    quarantined: int = 0
    bad_examples: list[str] = field(default_factory=list)


class PartitionLog:
    """The log of partition `partition` of `topic`, owned by `owner` while it holds the claim.

    A new owner claims the partition (a new epoch, fencing the one before); with `epoch`
    (opening it again after the store was away) the claim it took before is checked instead,
    raising FencedError if another worker has claimed it since. Raises StoreUnavailableError
    while PostgreSQL cannot be reached."""

    def __init__(
        self, store: Store, rules: Rules, topic: str, partition: int, owner: str, *, epoch: int | None = None
    ) -> None:
        self.store = store
        self.topic = topic
        self.partition = partition
        self.source = f"{topic}:{partition}"
        self.pipeline = Pipeline(store, rules, follow_events=True)
        if epoch is None:
            self.epoch = store.claim_owner(owner)  # from here on, an earlier owner's writes are refused
        else:
            with store.write() as batch:
                batch.check_owner(epoch)
            self.epoch = epoch
        self.engine: Engine = self.pipeline.recover()
        saved = store.load_position(self.source)
        self.position = 0 if saved is None else saved  # the next offset to read
        self.live = False
        self.stats = PartitionStats()
        self._saved = (self.engine.watermark, 0)  # the watermark last committed, and when (ms)
        log.info(
            "partition taken", partition=self.source, position=self.position, epoch=self.epoch,
            users=len(self.engine.users), watermark=self.engine.watermark,
        )  # fmt: skip

    @property
    def rules(self) -> Rules:
        return self.pipeline.rules

    def reload(self, rules: Rules) -> None:
        """Decide under `rules` from the next step on; unchanged triggers keep their state."""
        self.engine = self.pipeline.reload(self.engine, rules)

    def step(self, records: Sequence[Record], *, now: int, end: int | None) -> StepResult | None:
        """Decide `records` (the next ones of the partition, in order), advance, commit.

        `end` is the partition's end offset as last seen (None when unknown); the partition
        is caught up when its position reaches it. Raises FencedError if it was taken over,
        StoreUnavailableError if the store cannot take the step (the engine is then spent).
        """
        events: list[Event] = []
        received: list[int] = []
        retried: list[int | None] = []  # per event: the quarantine entry it is sent through again from
        tolerance = self.rules.settings.clock_skew_tolerance
        position = self.position
        for record in records:
            offset = record.offset()
            assert offset is not None and offset >= position, "records must come in order"
            position = offset + 1
            try:
                event = record_event(
                    record.value(), topic=self.topic, partition=self.partition, offset=offset,
                    timestamp_ms=record.timestamp()[1], skew_tolerance=tolerance,
                )  # fmt: skip
            except EventError as exc:
                self._bad(offset, exc)
                continue
            events.append(event)
            received.append(_received_ms(event))
            entry = retry_entry(record.headers())
            retried.append(None if entry is None else self._retrying(entry, event, retried))
        self.stats.records += len(records)
        caught_up = end is not None and position >= end
        if caught_up and not self.live:
            self._go_live()
        watermark = self._watermark(now, caught_up, received)
        if not events and watermark <= self.engine.watermark and position == self.position:
            return None  # nothing read, nothing to advance
        also = self._also(position)
        try:
            result = self.pipeline.step(self.engine, [events], now=now, watermark=watermark, retried=retried, also=also)
        except NOT_THE_EVENTS:
            raise
        except Exception as exc:
            log.warning("write failed; looking for the events at fault", partition=self.source, error=str(exc))
            self.engine, result = self.pipeline.isolate(
                [events], now=now, watermark=watermark, error=exc, retried=retried, also=also
            )
            self.stats.quarantined += len(result.quarantined)
        if result.wrote:
            self._saved = (self.engine.watermark, now)
        elif position != self.position or (self.engine.watermark > self._saved[0] and now - self._saved[1] >= 1_000):
            # Only bad records (their offsets still count), or a watermark that moved alone.
            self.pipeline.save_progress(self.engine, also)
            self._saved = (self.engine.watermark, now)
        self.position = position
        self.stats.steps += 1
        self.stats.fires += len(result.fires)
        return result

    def _retrying(self, entry: int, event: Event, before: list[int | None]) -> int | None:
        """`entry` if the record is that quarantined event of this partition, not retried yet
        (nor earlier in this step); else None: the record is decided as a new arrival, and a
        second retry of one entry is then a duplicate, never applied twice."""
        found = self.store.quarantine_entry(entry)
        if (
            found is None
            or found.retried_at is not None
            or found.message_id != event.message_id
            or quarantine_kind(found) != "event"
            or entry in before
        ):
            log.info("record names a quarantine entry it cannot retry; decided as a new event",
                     partition=self.source, entry=entry, message_id=event.message_id)  # fmt: skip
            return None
        return entry

    def _go_live(self) -> None:
        """Caught up: from here on the wall clock moves the watermark too (SPEC §2)."""
        self.live = True
        self.pipeline.follow_events = False
        self.engine.follow_events = False
        log.info("partition caught up; following the wall clock", partition=self.source)

    def _watermark(self, now: int, caught_up: bool, received: list[int]) -> int:
        engine = self.engine
        if not self.live:
            return engine.watermark  # the engine moves it with each accepted event
        if caught_up:
            clock = now
        elif received:  # a burst: the records' own receive times, not the worker's delay
            clock = min(now, max(received))
        else:  # behind, or the end not known (the broker away): nothing says time has passed
            return engine.watermark
        return max(engine.watermark, clock - engine.lateness)

    def _also(self, position: int) -> Callable[[Batch], None]:
        def write(batch: Batch) -> None:
            batch.check_owner(self.epoch)
            batch.save_position(self.source, position)

        return write

    def _bad(self, offset: int, exc: EventError) -> None:
        self.stats.bad += 1
        where = f"{self.source}@{offset}"
        if len(self.stats.bad_examples) < 20:
            self.stats.bad_examples.append(f"{where} {exc.field}: {exc.message}")
        log.warning("record is not an event; skipped", record=where, field=exc.field, error=exc.message)


def _received_ms(event: Event) -> int:
    return parse_ms(event.raw["receivedAt"])  # record_event set it
