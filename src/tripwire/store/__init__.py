"""Durable storage behind small ports (`store.base`); SQLite is the embedded default, PostgreSQL the cluster's.

`open_stores(location)` opens the set of adapters for a data folder or a `postgresql://` DSN.
"""

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
from tripwire.store.stores import Stores, open_stores

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
    "Stores",
    "open_stores",
]
