"""The store's ports: what tripwire needs from durable storage, as small Protocols.

- `Store`: the event log, user states, links, fires and the quarantine. One transaction
  (`Store.write()`) carries everything an engine batch changes, so a crash at any point
  loses no acknowledged event and emits no fire twice.
- `Outbox`: deliveries of fires' actions and their attempts, claimed under a lease.
- `Goals`: the reads and writes of the goal-conversion sweep.
- `InboxStore`: the in-app messages of the `in_app` action.

Adapters: `store.sqlite` with `store.outbox`, `store.goals`, `store.inbox` (the embedded
default, one file) and `store.postgres` (the cluster). `store.open_stores()` opens the
set for a location. Contract tests: tests/test_*_contract.py, run against every adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class LogRow:
    """One event as the log keeps it: its place in arrival order and its acceptance."""

    seq: int  # arrival order; 0 before the store assigns it
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    ts: int
    received_at: int
    decision: str  # accepted | late | duplicate | quarantined
    body: bytes  # the event as JSON, after clock-skew correction
    watermark: int | None = None  # the engine's watermark when it was decided (None in older logs)


@dataclass(frozen=True, slots=True)
class FireRow:
    """A fire as stored: SPEC §4 fields, its explanation, and when it was emitted."""

    fire_id: str
    trigger: str
    user_id: str
    key: Any
    fire_time: int
    events: tuple[str, ...]
    suppressed: str | None
    detail: str | None
    emitted_at: int
    holdout: bool = False
    # The Kafka partition whose log recorded it (None: the single-node log). Written as None:
    # the store fills in the partition it is scoped to, and every read returns it.
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """An event that could not be applied or saved, kept with why, for an operator to retry."""

    id: int  # 0 before the store assigns it
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    ts: int
    received_at: int
    quarantined_at: int
    reason: str
    body: bytes
    retried_at: int | None = None
    retry_decision: str | None = None


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """An outbox row to create with its fire: one action of one fire."""

    fire_id: str
    action: str
    channel: str
    trigger: str
    user_id: str
    next_at: int


class Batch(Protocol):
    """The writes of one transaction."""

    def append_events(self, rows: list[LogRow]) -> None: ...

    def save_users(self, states: dict[str, bytes | None]) -> None:
        """Upsert each user's saved state; None deletes it."""

    def save_links(self, links: dict[str, str]) -> None: ...

    def save_meta(self, meta: bytes) -> None: ...

    def add_fires(self, fires: list[FireRow]) -> None:
        """Record fires as this store's partition's; a fire_id already recorded is ignored (and keeps its partition).

        A fire's `partition` is None or the store's own; another is a `ValueError`.
        """

    def add_deliveries(self, rows: list[NewDelivery]) -> None:
        """Queue deliveries as this store's partition's; one (fire_id, action) already queued is ignored."""

    def quarantine(self, rows: list[QuarantineRow], logged: list[str]) -> None:
        """Keep `rows` in the quarantine; the accepted log rows of `logged` become quarantined."""

    def mark_retried(self, entry: int, at: int, decision: str) -> None:
        """Record that a quarantined event was sent through again, and its new decision."""

    def save_position(self, source: str, position: int) -> None:
        """Record the next offset to read in `source` (e.g. "topic:3"), committed with the rest of the batch."""

    def check_owner(self, epoch: int) -> None:
        """Raise `FencedError` unless `epoch` is still the log's latest claim; a claim waits for this
        transaction to end, so none can come between the check and the commit."""


class Store(Protocol):
    """Durable storage for one tripwire server, or one partition of a worker.

    `partition` is the log the per-log reads and writes are scoped to (events, users,
    links, meta, quarantine, positions, owner): None for the single-node log. Fires are
    shared by every partition, each keeping the partition that recorded it (`FireRow.partition`).
    """

    @property
    def partition(self) -> int | None: ...

    def open(self) -> None:
        """Create or migrate the schema; record applied migrations."""

    def migrations(self) -> list[tuple[int, str]]:
        """The applied migrations, (version, name) in order."""

    def close(self) -> None: ...

    def checkpoint(self) -> None:
        """Housekeeping of the storage that must not run inside a write (may do nothing)."""

    def write(self, *, commit: bool = True) -> AbstractContextManager[Batch]:
        """One durable transaction: committed (and on disk) when the block exits cleanly;
        with `commit` off, rolled back all the same (a trial of the writes)."""

    # -- recovery --------------------------------------------------------------------

    def load_meta(self) -> bytes | None: ...

    def load_links(self) -> dict[str, str]: ...

    def iter_users(self) -> Iterator[tuple[str, bytes]]: ...

    def accepted_ids_since(self, ts: int) -> Iterator[tuple[str, int]]:
        """(messageId, time) of accepted (or quarantined) events with time >= ts, for deduplication."""

    def accepted_after(self, ts: int) -> Iterator[LogRow]:
        """Accepted events with time > ts, in arrival order: those not yet applied."""

    def iter_log(self) -> Iterator[LogRow]:
        """Every logged event in arrival order."""

    def load_position(self, source: str) -> int | None:
        """The next offset to read in `source`, as last committed; None before any."""

    # -- fencing -----------------------------------------------------------------------

    def claim_owner(self, owner: str) -> int:
        """Take the log for `owner` (a worker's name): bump and return its epoch, atomically.

        Every write checked with an older epoch (`Batch.check_owner`) fails from now on.
        """

    # -- queries ---------------------------------------------------------------------

    def user_state(self, uid: str) -> bytes | None: ...

    def fires(
        self, *, trigger: str | None = None, user: str | None = None, since: int | None = None, limit: int = 100
    ) -> list[FireRow]:
        """Fires newest first (by fire time, then emission order)."""

    def fire_counts(self) -> dict[str, tuple[int, int]]:
        """Per trigger: (fires, suppressions)."""

    def events(self, *, users: list[str] | None = None, limit: int = 100) -> list[LogRow]:
        """Logged events newest first; with `users`, those whose userId or anonymousId is one of them."""

    def links_to(self, uid: str) -> list[str]:
        """The ids linked to `uid`."""

    def fire(self, fire_id: str) -> FireRow | None: ...

    def events_by_id(self, message_ids: list[str]) -> list[LogRow]:
        """The accepted events with these messageIds, in arrival order."""

    def quarantined(self, *, limit: int = 100, pending_only: bool = False) -> list[QuarantineRow]:
        """Quarantined events newest first; with `pending_only`, those not retried yet."""

    def quarantine_entry(self, entry: int) -> QuarantineRow | None: ...

    def quarantine_counts(self) -> tuple[int, int]:
        """(events quarantined, of which not retried yet)."""


# -- the outbox ----------------------------------------------------------------------------

PENDING, SENDING, DELIVERED, DEAD, DROPPED = "pending", "sending", "delivered", "dead", "dropped"


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One action of one fire, as the outbox keeps it."""

    id: int
    fire_id: str
    action: str
    channel: str
    trigger: str
    user_id: str
    status: str  # pending | sending | delivered | dead | dropped
    attempts: int
    next_at: int
    reason: str | None
    created_at: int
    updated_at: int
    delivered_at: int | None
    # The Kafka partition whose batch queued it (None: the single-node log): where its fire's
    # user state and events are (`Stores.partition(row.partition)`).
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at sending a delivery."""

    attempt: int
    started_at: int
    outcome: str  # ok | retry | failed
    http_status: int | None
    latency_ms: float
    error: str | None


class Outbox(Protocol):
    """Deliveries waiting, being sent, delivered, held, dropped or dead; with every attempt.

    Rows are created in the transaction of their fire (`Batch.add_deliveries`). A claim is
    a lease: a delivery whose sender died is claimed again once its lease runs out.
    Every method is its own transaction and safe to call from several threads.
    """

    def release_leases(self, now: int) -> int:
        """Make every delivery being sent claimable again (at start: its sender is gone); how many."""

    def claim(self, now: int, limit: int, lease_ms: int) -> list[DeliveryRow]:
        """Take up to `limit` due deliveries (and any whose lease ran out) for `lease_ms`, by due time."""

    def next_due(self) -> int | None:
        """The earliest due time of a pending delivery."""

    def finish(self, row: DeliveryRow, attempt: Attempt, *, status: str, next_at: int, reason: str | None) -> None:
        """Record an attempt and the delivery's new status, in one transaction."""

    def hold(self, row: DeliveryRow, until: int, reason: str, now: int) -> None:
        """Keep a delivery waiting until `until`, saying why."""

    def drop(self, row: DeliveryRow, status: str, reason: str, now: int) -> None:
        """End a delivery without sending it (`dropped` by a policy, or `dead`), saying why."""

    def delivered_since(self, user_id: str, since: int, channel: str | None) -> int:
        """How many deliveries reached `user_id` at or after `since` (on `channel`, if given)."""

    def find(
        self,
        *,
        status: str | None = None,
        user: str | None = None,
        fire_id: str | None = None,
        delivery_id: int | None = None,
        limit: int = 100,
    ) -> list[DeliveryRow]:
        """Deliveries newest first, filtered by whichever of the arguments are given."""

    def attempts(self, delivery_id: int) -> list[Attempt]:
        """The attempts of one delivery, in order."""

    def retry_dead(self, now: int, ids: list[int] | None = None) -> int:
        """Put dead deliveries (all, or those in `ids`) back in line with a fresh count; how many."""

    def action_stats(self) -> dict[str, dict[str, Any]]:
        """Per action: attempts, successes, failures, mean and max latency, and deliveries by status."""


# -- goals -----------------------------------------------------------------------------------

FireAfter = tuple[int, str, str, str, int, bool]  # n, fire_id, trigger, user_id, fire_time, holdout
EventAfter = tuple[int, str, int, bytes, str | None, str | None]  # seq, messageId, ts, body, userId, anonymousId


class Goals(Protocol):
    """What the goal sweep reads (fires and events after a cursor) and writes (conversions)."""

    def cursor(self) -> tuple[int, int]:
        """(last fire, last event) already swept; (0, 0) at first."""

    def save_cursor(self, fires: int, events: int) -> None: ...

    def fires_after(self, n: int, triggers: list[str], limit: int = 5_000) -> list[FireAfter]:
        """Fires recorded after `n` (not suppressed), of these triggers, in order."""

    def last_fire(self) -> int: ...

    def events_after(self, seq: int, names: list[str] | None = None, limit: int = 20_000) -> list[EventAfter]:
        """Accepted events logged after `seq`, in arrival order; with `names`, only events named so."""

    def last_event(self) -> int: ...

    def events_between(self, ids: list[str], after: int, until: int) -> list[tuple[str, int, bytes]]:
        """(messageId, time, body) of accepted events of these ids with `after < ts <= until`, by time."""

    def open_fires_of(self, trigger: str, user_id: str, since: int, before: int) -> list[tuple[str, bool]]:
        """(fire_id, holdout) of the user's unconverted fires with `since <= fire_time < before`."""

    def links(self) -> dict[str, str]: ...

    def links_to(self, uid: str) -> list[str]: ...

    def record(self, fire_id: str, trigger: str, user_id: str, holdout: bool, message_id: str, at: int) -> bool:
        """Record a conversion; False when the fire had one already."""

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per trigger: fires delivered and held out, and the conversions of each group."""


# -- the in-app inbox ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One message of a user's inbox; `id` orders messages (a later message has a larger id)."""

    id: int
    user_id: str
    fire_id: str
    action: str
    title: str
    body: str
    url: str | None
    created_at: int
    expires_at: int | None
    read_at: int | None


@dataclass(frozen=True, slots=True)
class NewInboxItem:
    """What the `in_app` channel stores; the store assigns the id."""

    user_id: str
    fire_id: str
    action: str
    title: str
    body: str
    url: str | None
    created_at: int
    expires_at: int | None


class InboxStore(Protocol):
    """Durable storage of in-app messages, stored once per (fire_id, action). Times are epoch ms."""

    def add(self, item: NewInboxItem) -> tuple[InboxItem, bool]:
        """Store `item` unless its (fire_id, action) is stored already; the stored row and whether it is new."""

    def messages(
        self, user_id: str, *, now: int, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> list[InboxItem]:
        """Unexpired messages of `user_id`, newest first; `before`/`after` bound the id (exclusive)."""

    def unread(self, user_id: str, *, now: int) -> int:
        """How many unexpired messages of `user_id` are unread."""

    def mark_read(self, user_id: str, ids: Sequence[int] | None, *, now: int) -> list[int]:
        """Mark `ids` (None: every message) of `user_id` read; the ids that were unread until now."""

    def purge(self, *, now: int) -> int:
        """Delete expired messages; how many."""
