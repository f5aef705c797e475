"""The in-app inbox on PostgreSQL (semantics of `store.inbox`, the SQLite adapter)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tripwire.store.base import InboxItem, NewInboxItem
from tripwire.store.postgres_db import PostgresDatabase

_COLUMNS = "id, user_id, fire_id, action, title, body, url, created_at, expires_at, read_at"


class PostgresInbox:
    """The inbox in the cluster's PostgreSQL schema; safe to use from several threads and processes."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def add(self, item: NewInboxItem) -> tuple[InboxItem, bool]:
        with self.db.transaction() as conn:
            # A concurrent insert of the same (fire_id, action) makes ON CONFLICT wait for its commit,
            # and the SELECT (a new snapshot in READ COMMITTED) then sees that row.
            inserted = conn.execute(
                "INSERT INTO inbox (user_id, fire_id, action, title, body, url, created_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (fire_id, action) DO NOTHING"
                f" RETURNING {_COLUMNS}",
                (item.user_id, item.fire_id, item.action, item.title, item.body, item.url, item.created_at,
                 item.expires_at),
            ).fetchone()  # fmt: skip
            row = (
                inserted
                or conn.execute(
                    f"SELECT {_COLUMNS} FROM inbox WHERE fire_id = %s AND action = %s", (item.fire_id, item.action)
                ).fetchone()
            )
        assert row is not None, "the row inserted or found in the same transaction"
        return InboxItem(*row), inserted is not None

    def messages(
        self, user_id: str, *, now: int, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> list[InboxItem]:
        query = f"SELECT {_COLUMNS} FROM inbox WHERE user_id = %s AND (expires_at IS NULL OR expires_at > %s)"
        params: list[Any] = [user_id, now]
        if before is not None:
            query += " AND id < %s"
            params.append(before)
        if after is not None:
            query += " AND id > %s"
            params.append(after)
        query += " ORDER BY id DESC LIMIT %s"
        with self.db.connection() as conn:
            return [InboxItem(*row) for row in conn.execute(query, (*params, limit))]

    def unread(self, user_id: str, *, now: int) -> int:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM inbox WHERE user_id = %s AND read_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > %s)",
                (user_id, now),
            ).fetchone()
        return int(row[0]) if row else 0

    def mark_read(self, user_id: str, ids: Sequence[int] | None, *, now: int) -> list[int]:
        query = "UPDATE inbox SET read_at = %s WHERE user_id = %s AND read_at IS NULL"
        params: list[Any] = [now, user_id]
        if ids is not None:
            if not ids:
                return []
            query += " AND id = ANY(%s)"
            params.append(list(ids))
        with self.db.connection() as conn:
            return sorted(row[0] for row in conn.execute(query + " RETURNING id", params))

    def purge(self, *, now: int) -> int:
        with self.db.connection() as conn:
            return conn.execute("DELETE FROM inbox WHERE expires_at <= %s", (now,)).rowcount
