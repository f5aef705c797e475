"""The goal sweep's reads and writes on PostgreSQL (semantics of `store.goals`, the SQLite adapter)."""

from __future__ import annotations

import json
from typing import Any

from tripwire.store.base import EventAfter, FireAfter
from tripwire.store.partitions import SINGLE_LOG
from tripwire.store.postgres_db import PostgresDatabase

# A JSON \u0000 escape not preceded by a backslash of its own, with the pairs of escaped backslashes before it.
_NUL_ESCAPE = r"(?<!\\)((?:\\\\)*)\\u0000"
_SUBSTITUTE = r"\1\\ufffd"


class PostgresGoals:
    """Reads fires and events, records conversions, in the cluster's PostgreSQL schema.

    One sweep serves the deployment, as fires are shared: it reads the events and links of
    every partition, and keeps its cursor in the meta of the single-node log.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def _read(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.db.connection() as conn:
            return conn.execute(query, params).fetchall()

    def cursor(self) -> tuple[int, int]:
        rows = self._read("SELECT value FROM meta WHERE part = %s AND name = 'goals'", (SINGLE_LOG,))
        if not rows:
            return 0, 0
        saved = json.loads(bytes(rows[0][0]))
        return int(saved["fires"]), int(saved["events"])

    def save_cursor(self, fires: int, events: int) -> None:
        value = json.dumps({"fires": fires, "events": events}).encode()
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO meta (part, name, value) VALUES (%s, 'goals', %s)"
                " ON CONFLICT (part, name) DO UPDATE SET value = excluded.value",
                (SINGLE_LOG, value),
            )

    def fires_after(self, n: int, triggers: list[str], limit: int = 5_000) -> list[FireAfter]:
        rows = self._read(
            "SELECT n, fire_id, trigger, user_id, fire_time, holdout FROM fires WHERE n > %s AND suppressed IS NULL"
            " AND trigger = ANY(%s) ORDER BY n LIMIT %s",
            (n, triggers, limit),
        )
        return [(n, fid, trigger, uid, at, bool(held)) for n, fid, trigger, uid, at, held in rows]

    def last_fire(self) -> int:
        return int(self._read("SELECT MAX(n) FROM fires")[0][0] or 0)

    def events_after(self, seq: int, names: list[str] | None = None, limit: int = 20_000) -> list[EventAfter]:
        """Accepted events logged after `seq`, in arrival order; with `names`, only events named so.

        PostgreSQL reads the name (`->>`). It refuses to unescape a \\u0000 in any string of
        the body, so that escape (not one that is itself escaped) is read as U+FFFD, here and
        in the names: only names differing in NUL versus U+FFFD alone could be mistaken.
        """
        query = "SELECT seq, message_id, ts, body, user_id, anonymous_id FROM events"
        where = " WHERE seq > %s AND decision = 'accepted'"
        params: tuple[Any, ...] = (seq,)
        if names is not None:
            # The regular expression runs only on the rare body with the escape in it.
            query += ", LATERAL (SELECT convert_from(body, 'UTF8') AS text) AS b"
            where += (
                " AND ((CASE WHEN strpos(b.text, '\\u0000') = 0 THEN b.text"
                " ELSE regexp_replace(b.text, %s, %s, 'g') END)::json ->> 'event') = ANY(%s)"
            )
            params = (*params, _NUL_ESCAPE, _SUBSTITUTE, [name.replace("\x00", "\ufffd") for name in names])
        rows = self._read(query + where + " ORDER BY seq LIMIT %s", (*params, limit))
        return [(s, mid, ts, bytes(body), uid, anon) for s, mid, ts, body, uid, anon in rows]

    def last_event(self) -> int:
        return int(self._read("SELECT MAX(seq) FROM events")[0][0] or 0)

    def events_between(self, ids: list[str], after: int, until: int) -> list[tuple[str, int, bytes]]:
        rows = self._read(
            "SELECT message_id, ts, body FROM events WHERE (user_id = ANY(%s) OR anonymous_id = ANY(%s))"
            " AND decision = 'accepted' AND ts > %s AND ts <= %s ORDER BY ts, seq",
            (ids, ids, after, until),
        )
        return [(mid, ts, bytes(body)) for mid, ts, body in rows]

    def open_fires_of(self, trigger: str, user_id: str, since: int, before: int) -> list[tuple[str, bool]]:
        rows = self._read(
            "SELECT fire_id, holdout FROM fires f WHERE trigger = %s AND user_id = %s AND suppressed IS NULL"
            " AND fire_time >= %s AND fire_time < %s"
            " AND NOT EXISTS (SELECT 1 FROM conversions c WHERE c.fire_id = f.fire_id) ORDER BY fire_time",
            (trigger, user_id, since, before),
        )
        return [(fid, bool(held)) for fid, held in rows]

    def links(self) -> dict[str, str]:
        # Every partition's links; an id linked in two partitions is read as the later partition has it.
        return dict(self._read("SELECT id, target FROM links ORDER BY part"))

    def links_to(self, uid: str) -> list[str]:
        return [row[0] for row in self._read("SELECT DISTINCT id FROM links WHERE target = %s", (uid,))]

    def record(self, fire_id: str, trigger: str, user_id: str, holdout: bool, message_id: str, at: int) -> bool:
        with self.db.connection() as conn:
            cur = conn.execute(
                "INSERT INTO conversions (fire_id, trigger, user_id, holdout, message_id, converted_at)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (fire_id) DO NOTHING",
                (fire_id, trigger, user_id, holdout, message_id, at),
            )
            return cur.rowcount > 0

    def stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for trigger, fired, held in self._read(
            "SELECT trigger, COUNT(*) FILTER (WHERE NOT holdout), COUNT(*) FILTER (WHERE holdout) FROM fires"
            " WHERE suppressed IS NULL GROUP BY trigger"
        ):
            out[trigger] = {"fires": fired, "holdout": held, "conversions": 0, "holdout_conversions": 0}
        for trigger, converted, held in self._read(
            "SELECT trigger, COUNT(*) FILTER (WHERE NOT holdout), COUNT(*) FILTER (WHERE holdout) FROM conversions"
            " GROUP BY trigger"
        ):
            entry = out.setdefault(trigger, {"fires": 0, "holdout": 0})
            entry.update(conversions=converted, holdout_conversions=held)
        return out
