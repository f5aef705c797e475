"""`tripwire serve` as an ingest node of the cluster: the same HTTP API, with the events
written to the Kafka topic (a request is answered 200 once the broker has them) and every
read (fires, users, events, the quarantine, deliveries) answered from PostgreSQL.

An ingest node keeps no state of its own, so any number of them can stand behind a load
balancer. The decisions (accepted, late, duplicate) are the workers'; the node counts
what it wrote as `queued`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import structlog
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tripwire.cluster.producer import EventProducer, Outgoing
from tripwire.cluster.records import RETRY_HEADER
from tripwire.errors import AlreadyRetriedError, NotRetryableError, StoreUnavailableError, TripwireError
from tripwire.events import Event
from tripwire.pipeline import quarantine_kind
from tripwire.rules import Rules, load_rules
from tripwire.server import views
from tripwire.store import QuarantineRow, Store, Stores

log = structlog.get_logger("tripwire.cluster")
QUEUED: Final = "queued"
DEFAULT_PARTITIONS: Final = 8


class TopicError(TripwireError):
    """The topic cannot be used (the broker cannot be reached, or refuses to create it)."""


def ensure_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 15.0) -> int:
    """The topic's partition count; the topic is created with `partitions` if it does not exist."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        found = admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
        if found is not None and found.error is None and found.partitions:
            return len(found.partitions)
        future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1)])[topic]
        try:
            future.result(timeout=timeout)
            log.info("topic created", topic=topic, partitions=partitions)
        except Exception as exc:  # made by another node meanwhile, or refused
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        described = admin.list_topics(topic=topic, timeout=timeout).topics[topic]
        return len(described.partitions)
    except Exception as exc:
        raise TopicError(f"--topic {topic}: cannot use it on {bootstrap}: {exc}") from exc


def _previous(event: Event) -> str | None:
    previous = event.raw.get("previousId") if event.type == "alias" else None
    return previous if isinstance(previous, str) else None


class ClusterService:
    """The service behind the HTTP API of an ingest node (`tripwire.server.ports.ServiceAPI`)."""

    def __init__(
        self,
        rules_path: str | Path,
        stores: Stores,
        *,
        bootstrap: str,
        topic: str,
        partitions: int = DEFAULT_PARTITIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules_path = Path(rules_path)
        self.rules: Rules = load_rules(self.rules_path)
        self.stores = stores
        self.store = stores.store  # fires, fire counts and deliveries are shared by every partition
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.clock = clock
        self.listeners: list[Callable[[list[Any]], None]] = []  # fires are the workers': nothing to tell here
        self._producer: EventProducer | None = None
        self._kafka_ok = False

    async def start(self) -> None:
        self.partitions = await asyncio.to_thread(ensure_topic, self.bootstrap, self.topic, self.partitions)
        self._producer = EventProducer(self.bootstrap, self.topic)
        self._kafka_ok = True
        log.info("ingest node started", topic=self.topic, partitions=self.partitions)

    async def stop(self) -> None:
        if self._producer is not None:
            left = await asyncio.to_thread(self._producer.close)
            if left:
                log.warning("events not acknowledged by the broker at stop (their requests got 503)", events=left)
            self._producer = None

    def ready(self) -> bool:
        return self._producer is not None and self._kafka_ok

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def submit(self, events: list[Event]) -> list[str]:
        if self._producer is None:
            raise StoreUnavailableError("tripwire is not taking events right now")
        identity = self.stores.identity
        keys = None
        if identity is not None:  # all of a person's events to one partition (store/postgres_identity.py)
            ids = [(e.user_id, e.anonymous_id, _previous(e)) for e in events]
            try:
                keys = [key.encode() for key in await asyncio.to_thread(identity.keys, ids)]
            except Exception as exc:  # PostgreSQL away: the client sends again
                self._kafka_ok = False
                raise StoreUnavailableError(f"the identity table (PostgreSQL) cannot be read: {exc}") from None
        try:
            await self._producer.send(events, keys)
        except StoreUnavailableError:
            self._kafka_ok = False
            raise
        self._kafka_ok = True
        return [QUEUED] * len(events)

    async def reload_rules(self) -> Rules:
        """Validate the rules file again and use it here: for deliveries and the admin API (the
        workers decide under theirs: each reads its file again on SIGHUP, docs/cluster.md)."""
        self.rules = await asyncio.to_thread(load_rules, self.rules_path)
        log.info("rules reloaded", triggers=[t.id for t in self.rules.triggers])
        return self.rules

    # -- reads, from PostgreSQL ---------------------------------------------------------------

    def _logs(self) -> list[Store]:
        return [self.stores.partition(p) for p in range(self.partitions)]

    def triggers(self) -> list[dict[str, Any]]:
        return views.triggers(self.rules, self.store.fire_counts())

    def fires(
        self, *, trigger: str | None = None, user: str | None = None, since_ms: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return [views.fire(row) for row in self.store.fires(trigger=trigger, user=user, since=since_ms, limit=limit)]

    def user(self, uid: str) -> dict[str, Any] | None:
        """The user as the partition holding their state or events sees them."""
        for log_store in self._logs():
            if log_store.user_state(uid) is not None or log_store.events(users=[uid], limit=1):
                return views.user(log_store, self.rules, uid, self.stores.outbox)
        return views.user(self.store, self.rules, uid, self.stores.outbox)  # fires only, if any

    def events(self, *, user: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        rows = []
        for log_store in self._logs():
            users = None if user is None else [user, *log_store.links_to(user)]
            rows += log_store.events(users=users, limit=limit)
        rows.sort(key=lambda row: row.received_at, reverse=True)
        return [views.event(row) for row in rows[:limit]]

    def quarantined(self, *, limit: int = 100, pending_only: bool = False) -> list[dict[str, Any]]:
        rows = [row for s in self._logs() for row in s.quarantined(limit=limit, pending_only=pending_only)]
        rows.sort(key=lambda row: row.quarantined_at, reverse=True)
        return [views.quarantined(row) for row in rows[:limit]]

    def quarantine_counts(self) -> tuple[int, int]:
        counts = [s.quarantine_counts() for s in self._logs()]
        return sum(total for total, _ in counts), sum(waiting for _, waiting in counts)

    async def retry_quarantined(self, entry: int | None) -> list[dict[str, Any]]:
        """Send quarantined events through again: each kept body goes back to its partition,
        marked with its entry (`RETRY_HEADER`), and the partition's worker decides it as a new
        arrival and records that decision on the entry, in its batch's transaction.

        The answer is `queued` for each: the decision is the worker's (`GET /api/quarantine`
        shows it once made). An entry retried twice before its worker got to it is applied
        once: the worker takes the first record as the retry and the second as a duplicate."""
        if self._producer is None:
            raise StoreUnavailableError("tripwire is not taking events right now")
        found = await asyncio.to_thread(self._retryable, entry)
        records = [
            Outgoing(bytes(row.body), (row.user_id or row.anonymous_id or "").encode(), partition,
                     [(RETRY_HEADER, str(row.id).encode())])
            for partition, row in found
        ]  # fmt: skip
        await self._producer.resend(records)
        log.info("quarantined events sent through again", entries=[row.id for _, row in found])
        return [{"id": row.id, "message_id": row.message_id, "decision": QUEUED} for _, row in found]

    def _retryable(self, entry: int | None) -> list[tuple[int, QuarantineRow]]:
        """The entries to send again, with their partitions, oldest first (as `retry_quarantined` says)."""
        logs = list(enumerate(self._logs()))
        if entry is None:
            rows = [(p, row) for p, s in logs for row in s.quarantined(limit=1_000, pending_only=True)]
            rows = [(p, row) for p, row in rows if quarantine_kind(row) == "event"]
            return sorted(rows, key=lambda pair: pair[1].id)[:1_000]
        for partition, log_store in logs:
            row = log_store.quarantine_entry(entry)
            if row is None:
                continue
            if quarantine_kind(row) == "timers":
                raise NotRetryableError(entry, "it holds a user's timers set aside, not an event to send again")
            if row.retried_at is not None:
                raise AlreadyRetriedError(entry, row.retry_decision or "")
            return [(partition, row)]
        raise KeyError(entry)

    def status(self) -> dict[str, Any]:
        return {"topic": self.topic, "partitions": self.partitions, "kafka_ok": self._kafka_ok, "store_ok": True}
