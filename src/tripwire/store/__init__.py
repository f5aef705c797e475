"""Durable storage behind small ports; SQLite is the embedded default."""

from tripwire.store.base import Batch, FireRow, LogRow, NewDelivery, QuarantineRow, Store
from tripwire.store.outbox import Attempt, DeliveryRow, SqliteOutbox
from tripwire.store.sqlite import SqliteStore

__all__ = [
    "Attempt",
    "Batch",
    "DeliveryRow",
    "FireRow",
    "LogRow",
    "NewDelivery",
    "QuarantineRow",
    "SqliteOutbox",
    "SqliteStore",
    "Store",
]
