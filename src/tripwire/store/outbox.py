"""The outbox: deliveries waiting, being sent, delivered, held, dropped or dead; with every attempt.

The port is `base.Outbox`; rows are created in the same transaction as their fire (see
`SqliteBatch.add_deliveries`); dispatchers claim them here. A claim is a lease: a delivery
whose sender died is claimed again when its lease runs out, and sent again with the same
idempotency key.
"""

from __future__ import annotations

from typing import Any

from tripwire.store.base import DEAD, DELIVERED, DROPPED, PENDING, SENDING, Attempt, DeliveryRow
from tripwire.store.sqlite import SqliteFile, filtered, transaction

_COLUMNS = (
    "id, fire_id, action, channel, trigger, user_id, status, attempts, next_at, reason, created_at, updated_at,"
    " delivered_at"
)


__all__ = ["DEAD", "DELIVERED", "DROPPED", "PENDING", "SENDING", "Attempt", "DeliveryRow", "SqliteOutbox"]


class SqliteOutbox(SqliteFile):
    """Deliveries in the server's SQLite file; safe to use from several threads."""

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one statement in its own transaction; its rows (for RETURNING) are fetched first."""
        with transaction(self._conn()) as conn:
            return conn.execute(sql, params).fetchall()

    # -- the dispatcher's side ---------------------------------------------------------

    def release_leases(self, now: int) -> int:
        """Make every delivery being sent claimable again (at start: its sender is gone)."""
        rows = self._write(
            "UPDATE deliveries SET status = 'pending', lease_until = NULL, updated_at = ? WHERE status = 'sending'"
            " RETURNING id",
            (now,),
        )
        return len(rows)

    def claim(self, now: int, limit: int, lease_ms: int) -> list[DeliveryRow]:
        """Take up to `limit` due deliveries (and any whose lease ran out) for `lease_ms`."""
        rows = self._write(
            f"UPDATE deliveries SET status = 'sending', lease_until = ?, updated_at = ? WHERE id IN ("
            " SELECT id FROM deliveries WHERE (status = 'pending' AND next_at <= ?)"
            " OR (status = 'sending' AND lease_until < ?) ORDER BY next_at LIMIT ?)"
            f" RETURNING {_COLUMNS}",
            (now + lease_ms, now, now, now, limit),
        )
        return sorted((DeliveryRow(*row) for row in rows), key=lambda r: (r.next_at, r.id))

    def next_due(self) -> int | None:
        row = self._conn().execute("SELECT MIN(next_at) FROM deliveries WHERE status = 'pending'").fetchone()
        return row[0] if row else None

    def finish(self, row: DeliveryRow, attempt: Attempt, *, status: str, next_at: int, reason: str | None) -> None:
        """Record an attempt and the delivery's new status, in one transaction."""
        with transaction(self._conn()) as conn:
            conn.execute(
                "INSERT INTO attempts (delivery_id, attempt, started_at, outcome, http_status, latency_ms, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.id, attempt.attempt, attempt.started_at, attempt.outcome, attempt.http_status,
                 attempt.latency_ms, attempt.error),
            )  # fmt: skip
            done = attempt.started_at + int(attempt.latency_ms)
            conn.execute(
                "UPDATE deliveries SET status = ?, attempts = ?, next_at = ?, reason = ?, lease_until = NULL,"
                " updated_at = ?, delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END WHERE id = ?",
                (status, attempt.attempt, next_at, reason, done, status, done, row.id),
            )

    def hold(self, row: DeliveryRow, until: int, reason: str, now: int) -> None:
        """Keep a delivery waiting until `until`, saying why."""
        self._write(
            "UPDATE deliveries SET status = 'pending', next_at = ?, reason = ?, lease_until = NULL, updated_at = ?"
            " WHERE id = ?",
            (until, reason, now, row.id),
        )

    def drop(self, row: DeliveryRow, status: str, reason: str, now: int) -> None:
        """End a delivery without sending it (`dropped` by a policy, or `dead`), saying why."""
        self._write(
            "UPDATE deliveries SET status = ?, reason = ?, lease_until = NULL, updated_at = ? WHERE id = ?",
            (status, reason, now, row.id),
        )

    def delivered_since(self, user_id: str, since: int, channel: str | None) -> int:
        """How many deliveries reached `user_id` at or after `since` (on `channel`, if given)."""
        sql = "SELECT COUNT(*) FROM deliveries WHERE user_id = ? AND status = 'delivered' AND delivered_at >= ?"
        params: tuple[Any, ...] = (user_id, since)
        if channel is not None:
            sql += " AND channel = ?"
            params = (*params, channel)
        return int(self._conn().execute(sql, params).fetchone()[0])

    # -- people's side -----------------------------------------------------------------

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
            (("status = ?", status), ("user_id = ?", user), ("fire_id = ?", fire_id), ("id = ?", delivery_id))
        )
        sql = f"SELECT {_COLUMNS} FROM deliveries{where} ORDER BY id DESC LIMIT ?"
        return [DeliveryRow(*row) for row in self._conn().execute(sql, (*params, limit))]

    def attempts(self, delivery_id: int) -> list[Attempt]:
        rows = self._conn().execute(
            "SELECT attempt, started_at, outcome, http_status, latency_ms, error FROM attempts"
            " WHERE delivery_id = ? ORDER BY attempt, id",
            (delivery_id,),
        )
        return [Attempt(*row) for row in rows]

    def retry_dead(self, now: int, ids: list[int] | None = None) -> int:
        """Put dead deliveries (all, or those in `ids`) back in line, with a fresh count of attempts."""
        sql = "UPDATE deliveries SET status = 'pending', attempts = 0, next_at = ?, reason = 'retried by hand',"
        sql += " updated_at = ? WHERE status = 'dead'"
        params: tuple[Any, ...] = (now, now)
        if ids is not None:
            sql += f" AND id IN ({', '.join('?' * len(ids))})"
            params = (*params, *ids)
        return len(self._write(sql + " RETURNING id", params))

    def action_stats(self) -> dict[str, dict[str, Any]]:
        """Per action: attempts, successes, failures, mean and max latency, and deliveries by status."""
        stats: dict[str, dict[str, Any]] = {}
        conn = self._conn()
        for action, status, count in conn.execute(
            "SELECT action, status, COUNT(*) FROM deliveries GROUP BY action, status"
        ):
            stats.setdefault(action, {"deliveries": {}})["deliveries"][status] = count
        for action, attempts, ok, failed, mean, worst in conn.execute(
            "SELECT d.action, COUNT(*), SUM(a.outcome = 'ok'), SUM(a.outcome != 'ok'), AVG(a.latency_ms),"
            " MAX(a.latency_ms) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id GROUP BY d.action"
        ):
            stats.setdefault(action, {"deliveries": {}}).update(
                attempts=attempts, successes=ok, failures=failed, mean_latency_ms=mean, max_latency_ms=worst
            )
        return stats
