"""The in-app inbox: messages the `in_app` action stored for a user, newest first, with read state.

The port is `base.InboxStore`; `SqliteInbox` keeps the messages in the server's SQLite file
(the `inbox` table of migration 2, so open `SqliteStore` first). A message is stored
once per (fire_id, action), so a retried delivery never shows twice. Times are epoch ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tripwire.store.base import InboxItem, InboxStore, NewInboxItem
from tripwire.store.sqlite import SqliteFile, transaction

__all__ = ["InboxItem", "InboxStore", "NewInboxItem", "SqliteInbox"]

_COLUMNS = "id, user_id, fire_id, action, title, body, url, created_at, expires_at, read_at"


def _item(row: tuple[Any, ...]) -> InboxItem:
    return InboxItem(*row)


class SqliteInbox(SqliteFile):
    """The inbox in the server's SQLite file; safe to use from several threads."""

    def add(self, item: NewInboxItem) -> tuple[InboxItem, bool]:
        with transaction(self._conn()) as conn:
            inserted = conn.execute(
                "INSERT INTO inbox (user_id, fire_id, action, title, body, url, created_at, expires_at)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fire_id, action) DO NOTHING RETURNING {_COLUMNS}",
                (item.user_id, item.fire_id, item.action, item.title, item.body, item.url, item.created_at,
                 item.expires_at),
            ).fetchone()  # fmt: skip
            row = (
                inserted
                or conn.execute(
                    f"SELECT {_COLUMNS} FROM inbox WHERE fire_id = ? AND action = ?", (item.fire_id, item.action)
                ).fetchone()
            )
        return _item(row), inserted is not None

    def messages(
        self, user_id: str, *, now: int, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> list[InboxItem]:
        sql = f"SELECT {_COLUMNS} FROM inbox WHERE user_id = ? AND (expires_at IS NULL OR expires_at > ?)"
        params: list[Any] = [user_id, now]
        if before is not None:
            sql += " AND id < ?"
            params.append(before)
        if after is not None:
            sql += " AND id > ?"
            params.append(after)
        sql += " ORDER BY id DESC LIMIT ?"
        return [_item(row) for row in self._conn().execute(sql, (*params, limit))]

    def unread(self, user_id: str, *, now: int) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM inbox WHERE user_id = ? AND read_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (user_id, now),
            )
            .fetchone()
        )
        return int(row[0])

    def mark_read(self, user_id: str, ids: Sequence[int] | None, *, now: int) -> list[int]:
        sql = "UPDATE inbox SET read_at = ? WHERE user_id = ? AND read_at IS NULL"
        params: list[Any] = [now, user_id]
        if ids is not None:
            if not ids:
                return []
            sql += f" AND id IN ({', '.join('?' * len(ids))})"
            params += list(ids)
        with transaction(self._conn()) as conn:
            return sorted(row[0] for row in conn.execute(sql + " RETURNING id", params))

    def purge(self, *, now: int) -> int:
        with transaction(self._conn()) as conn:
            return conn.execute("DELETE FROM inbox WHERE expires_at <= ?", (now,)).rowcount
