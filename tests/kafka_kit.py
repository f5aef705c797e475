"""The test Kafka broker (`TRIPWIRE_KAFKA`) and topics of a test's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import service_address


def broker() -> str:
    """The broker to test against (`TRIPWIRE_KAFKA`): a test without it skips, but fails in CI."""
    return service_address("TRIPWIRE_KAFKA")


@contextmanager
def fresh_topic(partitions: int) -> Iterator[str]:
    """A new topic with `partitions` partitions, deleted afterwards."""
    admin = AdminClient({"bootstrap.servers": broker()})
    name = f"test-{uuid.uuid4().hex[:12]}"
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        future.result(timeout=30)
    try:
        yield name
    finally:
        for future in admin.delete_topics([name]).values():
            future.result(timeout=30)


def produce(
    topic: str,
    records: list[tuple[bytes | None, bytes | None]],
    partition: int | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """Write (key, value) records as a team's own producer would, and wait for the broker."""
    producer = Producer({"bootstrap.servers": broker(), "enable.idempotence": True, "acks": "all"})
    for key, value in records:
        producer.produce(topic, value=value, key=key, partition=-1 if partition is None else partition, headers=headers)
        producer.poll(0)
    assert producer.flush(30) == 0, "the broker did not take every record"
