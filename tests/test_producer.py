"""The ingest side of the cluster: events produced to the topic, acknowledged by the broker."""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest
from confluent_kafka import Consumer

from kafka_kit import broker, fresh_topic
from tripwire.arrival import receive_event
from tripwire.cluster.producer import EventProducer
from tripwire.cluster.records import record_event
from tripwire.errors import StoreUnavailableError
from tripwire.events import Event
from tripwire.timestamps import format_ms

T0 = 1_772_323_200_000


def arrived(i: int, user: str) -> Event:
    raw = {"type": "track", "event": "song", "userId": user, "messageId": f"m{i}", "timestamp": format_ms(T0 + i)}
    return receive_event(raw, now=T0 + i, received_at=format_ms(T0 + i), skew_tolerance=2_000)


async def test_events_are_acknowledged_once_the_broker_has_them_keyed_by_user() -> None:
    events = [arrived(i, f"u{i % 7}") for i in range(300)]
    with fresh_topic(3) as topic:
        producer = EventProducer(broker(), topic)
        await producer.send(events[:150])
        await producer.send(events[150:])
        assert producer.close() == 0
        consumer = Consumer({"bootstrap.servers": broker(), "group.id": f"g-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest"})  # fmt: skip
        consumer.subscribe([topic])
        got: list[tuple[int, bytes, Event]] = []
        deadline = time.monotonic() + 30
        while len(got) < len(events) and time.monotonic() < deadline:
            for m in consumer.consume(500, timeout=0.5):
                assert m.error() is None
                event = record_event(m.value(), topic=topic, partition=m.partition() or 0, offset=m.offset() or 0,
                                     timestamp_ms=m.timestamp()[1], skew_tolerance=2_000)  # fmt: skip
                got.append((m.partition() or 0, m.key() or b"", event))
        consumer.close()
    assert sorted(e.message_id for _, _, e in got) == sorted(e.message_id for e in events)
    partitions: dict[bytes, set[int]] = {}
    for partition, key, event in got:
        assert key == event.user_id.encode() if event.user_id else False
        partitions.setdefault(key, set()).add(partition)
        assert event.raw == msgspec.json.decode(msgspec.json.encode(events[int(event.message_id[1:])].raw))
    assert all(len(p) == 1 for p in partitions.values())  # one user, one partition
    for key in partitions:  # and in order within it
        mine = [int(e.message_id[1:]) for _, k, e in got if k == key]
        assert mine == sorted(mine)


async def test_a_broker_that_cannot_be_reached_gives_a_503_in_bounded_time() -> None:
    producer = EventProducer("127.0.0.1:1", "t", **{"delivery.timeout.ms": 1_500, "request.timeout.ms": 1_000})
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="did not take the event"):
        await producer.send([arrived(1, "u1")])
    assert time.monotonic() - started < 10
    assert producer.close(timeout=1) == 0
