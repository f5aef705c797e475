"""The test Kafka broker (`TRIPWIRE_KAFKA`) and topics of a test's own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def kafka_bootstrap() -> str:
    """The broker to test against; without it a test skips, but fails in CI."""
    bootstrap = os.environ.get("TRIPWIRE_KAFKA", "")
    if not bootstrap:
        why = 'TRIPWIRE_KAFKA is not set: run eval "$(scripts/services start)" (scripts/test does it)'
        if os.environ.get("CI") == "true":
            pytest.fail(why + "; in CI every Kafka test must run", pytrace=False)
        pytest.skip(why)
    return bootstrap


@contextmanager
def fresh_topic(partitions: int) -> Iterator[str]:
    """A new topic with `partitions` partitions, deleted afterwards."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap()})
    name = f"test-{uuid.uuid4().hex[:12]}"
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        future.result(timeout=30)
    try:
        yield name
    finally:
        for future in admin.delete_topics([name]).values():
            future.result(timeout=30)


def produce(topic: str, records: list[tuple[bytes | None, bytes | None]], partition: int | None = None) -> None:
    """Write (key, value) records as a team's own producer would, and wait for the broker."""
    producer = Producer({"bootstrap.servers": kafka_bootstrap(), "enable.idempotence": True, "acks": "all"})
    for key, value in records:
        if partition is None:
            producer.produce(topic, value=value, key=key)
        else:
            producer.produce(topic, value=value, key=key, partition=partition)
        producer.poll(0)
    assert producer.flush(30) == 0, "the broker did not take every record"
