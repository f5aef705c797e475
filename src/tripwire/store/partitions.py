"""What every adapter checks the same way for a worker's partitions: partition numbers,
positions in a source, the owner's epoch, and the partition a fire names.

A store scoped to partition N keeps that Kafka partition's log (its events, users, links,
meta, quarantine, positions and owner); partition None is the single-node log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from tripwire.errors import TripwireError
from tripwire.store.base import FireRow

# The partition column's value for the single-node log (partition None): no Kafka partition is negative.
SINGLE_LOG: Final = -1
MAX_PARTITION: Final = 2**31 - 1  # Kafka numbers partitions with a 32-bit signed integer


class StoreLocationError(TripwireError, ValueError):
    """A store's location, schema or partition cannot be used."""


def check_partition(partition: object) -> int | None:
    """`partition` as given when it is None or a Kafka partition number; else an error saying what is allowed."""
    if partition is None:
        return None
    if isinstance(partition, bool) or not isinstance(partition, int) or not 0 <= partition <= MAX_PARTITION:
        raise StoreLocationError(
            f"partition: {partition!r} is not a Kafka partition number (a whole number from 0 to {MAX_PARTITION},"
            " or None for the single-node log)"
        )
    return partition


def describe(partition: int | None) -> str:
    """How messages name the log a store is scoped to."""
    return "the log" if partition is None else f"partition {partition}"


def check_source(source: object) -> None:
    if not isinstance(source, str) or not source:
        raise ValueError(f"source: {source!r} is not a source name (non-empty text, such as 'topic:3')")


def check_position(source: object, position: object) -> None:
    """A position is the next offset to read in a named source: a non-empty name and a whole number >= 0."""
    check_source(source)
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValueError(f"position: {position!r} is not an offset (a whole number, 0 or more)")


def check_owner(owner: object) -> None:
    if not isinstance(owner, str) or not owner:
        raise ValueError(f"owner: {owner!r} is not an owner's name (non-empty text naming the worker)")


def check_epoch(epoch: object) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ValueError(f"epoch: {epoch!r} is not an epoch (the whole number claim_owner returned)")


def check_fire_partitions(fires: Sequence[FireRow], partition: int | None) -> None:
    """A fire is recorded as the writing store's partition's: it may name none, or that one."""
    own = "None, the single-node log" if partition is None else str(partition)
    for i, fire in enumerate(fires):
        if fire.partition is not None and fire.partition != partition:
            raise ValueError(
                f"fires[{i}].partition: {fire.partition!r} is not the partition this store writes ({own}):"
                " leave it None, and the store records the partition that writes the fire"
            )
