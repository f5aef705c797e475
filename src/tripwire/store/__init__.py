"""Durable storage behind small ports; SQLite is the embedded default."""

from tripwire.store.base import Batch, FireRow, LogRow, Store
from tripwire.store.sqlite import SqliteStore

__all__ = ["Batch", "FireRow", "LogRow", "SqliteStore", "Store"]
