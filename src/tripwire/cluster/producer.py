"""Producing events to the cluster's topic, acknowledged only once the broker has them.

An idempotent producer (`enable.idempotence`: `acks=all`, ordered, no duplicates from its
own retries), each event keyed by its user so one user's events stay in one partition and
in order. `send` resolves once every event of the call is acknowledged by the broker, or
raises `StoreUnavailableError` (an HTTP 503: the client sends again, and a resend of an
event that did get through is a duplicate the worker recognises by its messageId).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any, Final

import structlog
from confluent_kafka import KafkaError, Message, Producer

from tripwire.cluster.records import partition_key, record_value
from tripwire.errors import OverloadedError, StoreUnavailableError
from tripwire.events import Event

log = structlog.get_logger("tripwire.cluster")
# How long an event may wait for the broker before its request gets a 503 (SDKs retry).
DELIVERY_TIMEOUT_MS: Final = 10_000


def producer_settings(bootstrap: str, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": f"tripwire-ingest-{socket.gethostname()}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
        "request.timeout.ms": min(DELIVERY_TIMEOUT_MS, 5_000),
        "queue.buffering.max.messages": 200_000,
        "partitioner": "consistent_random",  # librdkafka's default, said here: CRC32 of the key
        "logger": logging.getLogger("tripwire.kafka"),  # librdkafka's lines through tripwire's logging
    }
    settings.update(extra)
    return settings


@dataclass(frozen=True)
class Outgoing:
    """One record to write: its value, key, and (when it must go to one) partition and headers."""

    value: bytes
    key: bytes
    partition: int = -1  # librdkafka's "any": the partitioner picks it from the key
    headers: list[tuple[str, str | bytes | None]] | None = None


class EventProducer:
    """Sends events to `topic`; one polling thread serves the delivery reports."""

    def __init__(self, bootstrap: str, topic: str, **settings: Any) -> None:
        self.topic = topic
        self._producer = Producer(producer_settings(bootstrap, **settings))
        self._running = True
        self._thread = threading.Thread(target=self._serve_reports, name="tripwire-producer", daemon=True)
        self._thread.start()

    async def send(self, events: list[Event], keys: list[bytes] | None = None) -> None:
        """Every event written to the topic and acknowledged, in order per key; `keys` are the
        record keys (by default each event's user, see `partition_key`)."""
        await self._produce([
            Outgoing(record_value(event), partition_key(event) if keys is None else keys[i])
            for i, event in enumerate(events)
        ])  # fmt: skip

    async def resend(self, records: list[Outgoing]) -> None:
        """Records written as they are (a quarantined event sent through again to its partition)."""
        await self._produce(records)

    async def _produce(self, records: list[Outgoing]) -> None:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for record in records:
            future: asyncio.Future[None] = loop.create_future()

            def delivered(error: KafkaError | None, _message: Message, future: asyncio.Future[None] = future) -> None:
                loop.call_soon_threadsafe(_settle, future, error)

            try:
                self._producer.produce(
                    self.topic, value=record.value, key=record.key, partition=record.partition,
                    headers=record.headers, on_delivery=delivered,
                )  # fmt: skip
            except BufferError:  # the local queue is full: the broker is slow or away
                raise OverloadedError(retry_after=1.0) from None
            futures.append(future)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            raise failed

    def close(self, timeout: float = 10.0) -> int:
        """Wait for what is in flight (up to `timeout`); the number of events still not acknowledged."""
        left = self._producer.flush(timeout)
        self._running = False
        self._thread.join()
        return int(left)

    def _serve_reports(self) -> None:
        while self._running:
            self._producer.poll(0.05)


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        log.warning("the broker did not take an event", error=str(error))
        future.set_exception(StoreUnavailableError(f"the event log (Kafka) did not take the event: {error.str()}"))
