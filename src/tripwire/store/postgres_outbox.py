"""The outbox on PostgreSQL: several dispatchers, on one machine or many, share it.

A claim takes due rows with `FOR UPDATE SKIP LOCKED`, so two dispatchers claiming at
once never take the same delivery and never wait on each other's rows. Semantics as in
the SQLite adapter (`store.outbox`), held to by tests/test_outbox_contract.py.
"""

from __future__ import annotations

from typing import Any

from tripwire.store.base import Attempt, DeliveryRow
from tripwire.store.partitions import SINGLE_LOG
from tripwire.store.postgres_db import PostgresDatabase
from tripwire.store.sqlite import filtered

_COLUMNS = (
    "id, fire_id, action, channel, trigger, user_id, status, attempts, next_at, reason, created_at, updated_at,"
    f" delivered_at, NULLIF(part, {SINGLE_LOG})"  # the partition that queued it; the single-node log's -1 is None
)


class PostgresOutbox:
    """Deliveries in the cluster's PostgreSQL schema; safe to use from several threads and processes."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def _write(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; its rows (for RETURNING)."""
        with self.db.connection() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    def _read(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.db.connection() as conn:
            return conn.execute(query, params).fetchall()

    # -- the dispatcher's side -----------------------------------------------------------

    def release_leases(self, now: int) -> int:
        rows = self._write(
            "UPDATE deliveries SET status = 'pending', lease_until = NULL, updated_at = %s WHERE status = 'sending'"
            " RETURNING id",
            (now,),
        )
        return len(rows)

    def claim(self, now: int, limit: int, lease_ms: int) -> list[DeliveryRow]:
        rows = self._write(
            "UPDATE deliveries SET status = 'sending', lease_until = %s, updated_at = %s WHERE id IN ("
            " SELECT id FROM deliveries WHERE (status = 'pending' AND next_at <= %s)"
            " OR (status = 'sending' AND lease_until < %s) ORDER BY next_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            f" RETURNING {_COLUMNS}",
            (now + lease_ms, now, now, now, limit),
        )
        return sorted((DeliveryRow(*row) for row in rows), key=lambda r: (r.next_at, r.id))

    def next_due(self) -> int | None:
        [(due,)] = self._read("SELECT MIN(next_at) FROM deliveries WHERE status = 'pending'")
        return None if due is None else int(due)

    def finish(self, row: DeliveryRow, attempt: Attempt, *, status: str, next_at: int, reason: str | None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO attempts (delivery_id, attempt, started_at, outcome, http_status, latency_ms, error)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (row.id, attempt.attempt, attempt.started_at, attempt.outcome, attempt.http_status,
                 attempt.latency_ms, attempt.error),
            )  # fmt: skip
            done = attempt.started_at + int(attempt.latency_ms)
            conn.execute(
                "UPDATE deliveries SET status = %s, attempts = %s, next_at = %s, reason = %s, lease_until = NULL,"
                " updated_at = %s, delivered_at = CASE WHEN %s = 'delivered' THEN %s ELSE delivered_at END"
                " WHERE id = %s",
                (status, attempt.attempt, next_at, reason, done, status, done, row.id),
            )

    def hold(self, row: DeliveryRow, until: int, reason: str, now: int) -> None:
        self._write(
            "UPDATE deliveries SET status = 'pending', next_at = %s, reason = %s, lease_until = NULL, updated_at = %s"
            " WHERE id = %s",
            (until, reason, now, row.id),
        )

    def drop(self, row: DeliveryRow, status: str, reason: str, now: int) -> None:
        self._write(
            "UPDATE deliveries SET status = %s, reason = %s, lease_until = NULL, updated_at = %s WHERE id = %s",
            (status, reason, now, row.id),
        )

    def delivered_since(self, user_id: str, since: int, channel: str | None) -> int:
        query = "SELECT COUNT(*) FROM deliveries WHERE user_id = %s AND status = 'delivered' AND delivered_at >= %s"
        params: tuple[Any, ...] = (user_id, since)
        if channel is not None:
            query += " AND channel = %s"
            params = (*params, channel)
        return int(self._read(query, params)[0][0])

    # -- people's side -------------------------------------------------------------------

    def find(
        self,
        *,
        status: str | None = None,
        user: str | None = None,
        fire_id: str | None = None,
        delivery_id: int | None = None,
        limit: int = 100,
    ) -> list[DeliveryRow]:
        where, params = filtered(
            (("status = %s", status), ("user_id = %s", user), ("fire_id = %s", fire_id), ("id = %s", delivery_id))
        )
        query = f"SELECT {_COLUMNS} FROM deliveries{where} ORDER BY id DESC LIMIT %s"
        return [DeliveryRow(*row) for row in self._read(query, (*params, limit))]

    def attempts(self, delivery_id: int) -> list[Attempt]:
        rows = self._read(
            "SELECT attempt, started_at, outcome, http_status, latency_ms, error FROM attempts"
            " WHERE delivery_id = %s ORDER BY attempt, id",
            (delivery_id,),
        )
        return [Attempt(*row) for row in rows]

    def retry_dead(self, now: int, ids: list[int] | None = None) -> int:
        query = "UPDATE deliveries SET status = 'pending', attempts = 0, next_at = %s, reason = 'retried by hand',"
        query += " updated_at = %s WHERE status = 'dead'"
        params: tuple[Any, ...] = (now, now)
        if ids is not None:
            query += " AND id = ANY(%s)"
            params = (*params, ids)
        return len(self._write(query + " RETURNING id", params))

    def action_stats(self) -> dict[str, dict[str, Any]]:
        stats: dict[str, dict[str, Any]] = {}
        for action, status, count in self._read(
            "SELECT action, status, COUNT(*) FROM deliveries GROUP BY action, status"
        ):
            stats.setdefault(action, {"deliveries": {}})["deliveries"][status] = count
        for action, attempts, ok, failed, mean, worst in self._read(
            "SELECT d.action, COUNT(*), COUNT(*) FILTER (WHERE a.outcome = 'ok'), COUNT(*) FILTER (WHERE"
            " a.outcome != 'ok'), AVG(a.latency_ms), MAX(a.latency_ms) FROM attempts a JOIN deliveries d"
            " ON d.id = a.delivery_id GROUP BY d.action"
        ):
            stats.setdefault(action, {"deliveries": {}}).update(
                attempts=attempts, successes=ok, failures=failed, mean_latency_ms=mean, max_latency_ms=worst
            )
        return stats
