"""Conversions: a trigger's goal event seen within its period after a fire, holdouts included."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from tripwire.store.sqlite import connect


class SqliteGoals:
    """Reads fires and events, records conversions, in the server's SQLite file."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / "tripwire.db"
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    def open_fires(self, trigger: str, since: int) -> list[tuple[str, str, int, bool]]:
        """(fire_id, user_id, fire_time, holdout) of fires at or after `since` not yet converted."""
        rows = self._conn().execute(
            "SELECT fire_id, user_id, fire_time, holdout FROM fires WHERE trigger = ? AND suppressed IS NULL"
            " AND fire_time >= ? AND fire_id NOT IN (SELECT fire_id FROM conversions WHERE trigger = ?)"
            " ORDER BY fire_time",
            (trigger, since, trigger),
        )
        return [(fid, uid, at, bool(holdout)) for fid, uid, at, holdout in rows]

    def events_between(self, ids: list[str], after: int, until: int) -> list[tuple[str, int, bytes]]:
        """(messageId, time, body) of accepted events of these ids with `after < ts <= until`, by time."""
        marks = ", ".join("?" * len(ids))
        rows = self._conn().execute(
            f"SELECT message_id, ts, body FROM events WHERE (user_id IN ({marks}) OR anonymous_id IN ({marks}))"
            " AND decision = 'accepted' AND ts > ? AND ts <= ? ORDER BY ts, seq",
            (*ids, *ids, after, until),
        )
        return [(mid, ts, bytes(body)) for mid, ts, body in rows]

    def links_to(self, uid: str) -> list[str]:
        return [row[0] for row in self._conn().execute("SELECT id FROM links WHERE target = ?", (uid,))]

    def record(self, fire_id: str, trigger: str, user_id: str, holdout: bool, message_id: str, at: int) -> None:
        conn = self._conn()
        conn.execute(
            "INSERT INTO conversions (fire_id, trigger, user_id, holdout, message_id, converted_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fire_id) DO NOTHING",
            (fire_id, trigger, user_id, int(holdout), message_id, at),
        )

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per trigger: fires delivered and held out, and the conversions of each group."""
        out: dict[str, dict[str, Any]] = {}
        conn = self._conn()
        for trigger, fired, held in conn.execute(
            "SELECT trigger, SUM(holdout = 0), SUM(holdout = 1) FROM fires WHERE suppressed IS NULL GROUP BY trigger"
        ):
            out[trigger] = {"fires": fired, "holdout": held, "conversions": 0, "holdout_conversions": 0}
        for trigger, converted, held in conn.execute(
            "SELECT trigger, SUM(holdout = 0), SUM(holdout = 1) FROM conversions GROUP BY trigger"
        ):
            entry = out.setdefault(trigger, {"fires": 0, "holdout": 0})
            entry.update(conversions=converted, holdout_conversions=held)
        return out
