"""Durable storage behind small ports (`store.base`); SQLite is the embedded default, PostgreSQL the cluster's.

`open_stores(location)` opens the set of adapters for a data folder or a `postgresql://` DSN;
`open_stores(dsn, partition=N)` scopes the store to one Kafka partition's log.
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
from tripwire.store.partitions import StoreLocationError
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
    "StoreLocationError",
    "Stores",
    "open_stores",
]
