"""One factory for the set of adapters a deployment uses: SQLite for a data folder, PostgreSQL for a DSN."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tripwire.store.base import Goals, InboxStore, Outbox, Store
from tripwire.store.goals import SqliteGoals
from tripwire.store.inbox import SqliteInbox
from tripwire.store.outbox import SqliteOutbox
from tripwire.store.partitions import StoreLocationError, check_partition
from tripwire.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from tripwire.store.postgres_identity import PostgresIdentity

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class _Closable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Stores:
    """The adapters of one location, opened (schema created or migrated) and sharing its connections.

    `store` keeps the log `open_stores` was given (a partition's, or the single node's);
    the outbox, goals and inbox are shared by every partition.
    """

    store: Store
    outbox: Outbox
    goals: Goals
    inbox: InboxStore
    kind: str  # sqlite | postgres
    _resource: _Closable
    _scoped: Callable[[int | None], Store]
    # The cluster's record keys by identity (PostgreSQL only; see store/postgres_identity.py).
    identity: PostgresIdentity | None = None

    def partition(self, partition: int | None) -> Store:
        """A store for the log of `partition` (None: the single node's), sharing these connections.

        For a worker that holds several partitions: one pool serves them all.
        """
        return self._scoped(check_partition(partition))

    def close(self) -> None:
        """Close every adapter's connections (a PostgreSQL pool reopens if an adapter is used again)."""
        self._resource.close()


def is_postgres(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def _no_partitions(partition: int | None) -> None:
    if partition is not None:
        raise StoreLocationError(
            f"partition: {partition} needs a PostgreSQL location (postgresql://...): a SQLite data folder keeps"
            " one log, the single node's (leave the partition out)"
        )


def open_stores(location: str | Path, *, schema: str = "tripwire", partition: int | None = None) -> Stores:
    """Open the adapters for `location`: a `postgresql://` DSN (tables in `schema`), else a data folder.

    `store` keeps the log of `partition` (a Kafka partition's number; None, the default, is
    the single-node log). The schema is created or migrated here, before any adapter is used.
    """
    partition = check_partition(partition)
    if is_postgres(location):
        # psycopg is imported only when a DSN is given, so the embedded server starts without it.
        from tripwire.store.postgres import PostgresStore  # noqa: PLC0415
        from tripwire.store.postgres_db import PostgresDatabase  # noqa: PLC0415
        from tripwire.store.postgres_goals import PostgresGoals  # noqa: PLC0415
        from tripwire.store.postgres_inbox import PostgresInbox  # noqa: PLC0415
        from tripwire.store.postgres_outbox import PostgresOutbox  # noqa: PLC0415

        db = PostgresDatabase(str(location), schema=schema)
        pg = PostgresStore(db, partition=partition)
        pg.open()

        def scoped(part: int | None) -> Store:
            return pg if part == partition else PostgresStore(db, partition=part)

        from tripwire.store.postgres_identity import PostgresIdentity  # noqa: PLC0415

        outbox, goals, inbox = PostgresOutbox(db), PostgresGoals(db), PostgresInbox(db)
        return Stores(pg, outbox, goals, inbox, "postgres", db, scoped, PostgresIdentity(db))
    _no_partitions(partition)
    lite = SqliteStore(location)
    lite.open()

    def single(part: int | None) -> Store:
        _no_partitions(part)
        return lite

    return Stores(lite, SqliteOutbox(location), SqliteGoals(location), SqliteInbox(location), "sqlite", lite, single)
