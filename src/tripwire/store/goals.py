"""Conversions: a trigger's goal event seen within its period after a fire, holdouts included.

The sweep is incremental: a cursor (in the `meta` table) remembers the last fire and
the last logged event it looked at (the port is `base.Goals`), so each is examined once, however long the server
was down, and a conversion is found whichever of the fire and the goal event came first.
"""

from __future__ import annotations

import json
from typing import Any

from tripwire.store.base import EventAfter, FireAfter
from tripwire.store.sqlite import SqliteFile

__all__ = ["EventAfter", "FireAfter", "SqliteGoals"]


class SqliteGoals(SqliteFile):
    """Reads fires and events, records conversions, in the server's SQLite file."""

    def cursor(self) -> tuple[int, int]:
        """(last fire, last event) already swept."""
        row = self._conn().execute("SELECT value FROM meta WHERE name = 'goals'").fetchone()
        if row is None:
            return 0, 0
        saved = json.loads(bytes(row[0]))
        return int(saved["fires"]), int(saved["events"])

    def save_cursor(self, fires: int, events: int) -> None:
        value = json.dumps({"fires": fires, "events": events}).encode()
        self._conn().execute(
            "INSERT INTO meta (name, value) VALUES ('goals', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (value,),
        )

    def fires_after(self, n: int, triggers: list[str], limit: int = 5_000) -> list[FireAfter]:
        """Fires recorded after `n` (not suppressed), of these triggers, in order."""
        marks = ", ".join("?" * len(triggers))
        rows = self._conn().execute(
            f"SELECT n, fire_id, trigger, user_id, fire_time, holdout FROM fires WHERE n > ? AND suppressed IS NULL"
            f" AND trigger IN ({marks}) ORDER BY n LIMIT ?",
            (n, *triggers, limit),
        )
        return [(n, fid, trigger, uid, at, bool(held)) for n, fid, trigger, uid, at, held in rows]

    def last_fire(self) -> int:
        row = self._conn().execute("SELECT MAX(n) FROM fires").fetchone()
        return int(row[0] or 0)

    def events_after(self, seq: int, names: list[str] | None = None, limit: int = 20_000) -> list[EventAfter]:
        """Accepted events logged after `seq`, in arrival order; with `names`, only events named so.

        The name is read by SQLite, so the many events no goal is about are never decoded here.
        """
        where = "seq > ? AND decision = 'accepted'"
        params: tuple[Any, ...] = (seq,)
        if names is not None:
            where += f" AND json_extract(CAST(body AS TEXT), '$.event') IN ({', '.join('?' * len(names))})"
            params = (*params, *names)
        rows = self._conn().execute(
            f"SELECT seq, message_id, ts, body, user_id, anonymous_id FROM events WHERE {where} ORDER BY seq LIMIT ?",
            (*params, limit),
        )
        return [(s, mid, ts, bytes(body), uid, anon) for s, mid, ts, body, uid, anon in rows]

    def last_event(self) -> int:
        row = self._conn().execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def events_between(self, ids: list[str], after: int, until: int) -> list[tuple[str, int, bytes]]:
        """(messageId, time, body) of accepted events of these ids with `after < ts <= until`, by time."""
        marks = ", ".join("?" * len(ids))
        rows = self._conn().execute(
            f"SELECT message_id, ts, body FROM events WHERE (user_id IN ({marks}) OR anonymous_id IN ({marks}))"
            " AND decision = 'accepted' AND ts > ? AND ts <= ? ORDER BY ts, seq",
            (*ids, *ids, after, until),
        )
        return [(mid, ts, bytes(body)) for mid, ts, body in rows]

    def open_fires_of(self, trigger: str, user_id: str, since: int, before: int) -> list[tuple[str, bool]]:
        """(fire_id, holdout) of the user's unconverted fires with `since <= fire_time < before`."""
        rows = self._conn().execute(
            "SELECT fire_id, holdout FROM fires WHERE trigger = ? AND user_id = ? AND suppressed IS NULL"
            " AND fire_time >= ? AND fire_time < ? AND fire_id NOT IN (SELECT fire_id FROM conversions)"
            " ORDER BY fire_time",
            (trigger, user_id, since, before),
        )
        return [(fid, bool(held)) for fid, held in rows]

    def links(self) -> dict[str, str]:
        return dict(self._conn().execute("SELECT id, target FROM links"))

    def links_to(self, uid: str) -> list[str]:
        return [row[0] for row in self._conn().execute("SELECT id FROM links WHERE target = ?", (uid,))]

    def record(self, fire_id: str, trigger: str, user_id: str, holdout: bool, message_id: str, at: int) -> bool:
        """Record a conversion; False when the fire had one already."""
        cursor = self._conn().execute(
            "INSERT INTO conversions (fire_id, trigger, user_id, holdout, message_id, converted_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fire_id) DO NOTHING",
            (fire_id, trigger, user_id, int(holdout), message_id, at),
        )
        return cursor.rowcount > 0

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
