"""Durable storage behind small ports (`store.base`); SQLite is the embedded default."""

from tripwire.store.base import (
    Attempt,
    Batch,
    DeliveryRow,
    FireRow,
    Goals,
    InboxItem,
    InboxStore,
    LogRow,
    NewDelivery,
    NewInboxItem,
    Outbox,
    QuarantineRow,
    Store,
)
from tripwire.store.outbox import SqliteOutbox
from tripwire.store.sqlite import SqliteStore

__all__ = [
    "Attempt",
    "Batch",
    "DeliveryRow",
    "FireRow",
    "Goals",
    "InboxItem",
    "InboxStore",
    "LogRow",
    "NewDelivery",
    "NewInboxItem",
    "Outbox",
    "QuarantineRow",
    "SqliteOutbox",
    "SqliteStore",
    "Store",
]
