"""The store's ports: what the server needs from durable storage, as small Protocols.

One transaction (`Store.write()`) carries everything an engine batch changes: log
rows with their acceptance, user states, engine meta, identity links and fires.
A crash at any point therefore loses no acknowledged event and emits no fire twice.
Adapters: `store.sqlite` (embedded default). Contract tests in tests/test_store_contract.py.
"""

from __future__ import annotations

from collections.abc import Iterator
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
        """Record fires; a fire_id already recorded is ignored."""

    def add_deliveries(self, rows: list[NewDelivery]) -> None:
        """Queue deliveries; one (fire_id, action) already queued is ignored."""

    def quarantine(self, rows: list[QuarantineRow], logged: list[str]) -> None:
        """Keep `rows` in the quarantine; the accepted log rows of `logged` become quarantined."""

    def mark_retried(self, entry: int, at: int, decision: str) -> None:
        """Record that a quarantined event was sent through again, and its new decision."""


class Store(Protocol):
    """Durable storage for one tripwire server."""

    def open(self) -> None:
        """Create or migrate the schema; record applied migrations."""

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
