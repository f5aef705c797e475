"""One factory for the set of adapters a deployment uses: SQLite for a data folder, PostgreSQL for a DSN."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tripwire.store.base import Goals, InboxStore, Outbox, Store
from tripwire.store.goals import SqliteGoals
from tripwire.store.inbox import SqliteInbox
from tripwire.store.outbox import SqliteOutbox
from tripwire.store.sqlite import SqliteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class _Closable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Stores:
    """The adapters of one location, opened (schema created or migrated) and sharing its connections."""

    store: Store
    outbox: Outbox
    goals: Goals
    inbox: InboxStore
    kind: str  # sqlite | postgres
    _resource: _Closable

    def close(self) -> None:
        """Close every adapter's connections (a PostgreSQL pool reopens if an adapter is used again)."""
        self._resource.close()


def is_postgres(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def open_stores(location: str | Path, *, schema: str = "tripwire") -> Stores:
    """Open the adapters for `location`: a `postgresql://` DSN (tables in `schema`), else a data folder.

    The store's schema is created or migrated here, before any adapter is used.
    """
    if is_postgres(location):
        # psycopg is imported only when a DSN is given, so the embedded server starts without it.
        from tripwire.store.postgres import PostgresStore  # noqa: PLC0415
        from tripwire.store.postgres_db import PostgresDatabase  # noqa: PLC0415
        from tripwire.store.postgres_goals import PostgresGoals  # noqa: PLC0415
        from tripwire.store.postgres_inbox import PostgresInbox  # noqa: PLC0415
        from tripwire.store.postgres_outbox import PostgresOutbox  # noqa: PLC0415

        db = PostgresDatabase(str(location), schema=schema)
        pg = PostgresStore(db)
        pg.open()
        return Stores(pg, PostgresOutbox(db), PostgresGoals(db), PostgresInbox(db), "postgres", db)
    lite = SqliteStore(location)
    lite.open()
    return Stores(lite, SqliteOutbox(location), SqliteGoals(location), SqliteInbox(location), "sqlite", lite)
