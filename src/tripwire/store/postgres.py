"""The cluster's store on PostgreSQL: the log, user states, links, fires and the quarantine.

The semantics are those of the SQLite adapter (`store.sqlite`), held to by the same
contract tests; `postgres_db.PostgresDatabase` holds the pool, schema and migrations.
A store is scoped to one partition's log: every per-log table (events, users, links, meta,
quarantine, positions, owner) has a `part` column in its key, and every query of this
module names it. Fires are shared by all partitions; each keeps the `part` that recorded it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg

from tripwire.errors import FencedError
from tripwire.store.base import FireRow, LogRow, NewDelivery, QuarantineRow
from tripwire.store.partitions import (
    SINGLE_LOG,
    check_epoch,
    check_fire_partitions,
    check_owner,
    check_partition,
    check_position,
    check_source,
    describe,
)
from tripwire.store.postgres_db import PostgresDatabase
from tripwire.store.sqlite import filtered

_LOG_COLUMNS = "seq, message_id, user_id, anonymous_id, ts, received_at, decision, body, watermark"
_QUARANTINE_COLUMNS = (
    "id, message_id, user_id, anonymous_id, ts, received_at, quarantined_at, reason, body, retried_at, retry_decision"
)
_FIRE_COLUMNS = "fire_id, trigger, user_id, key, fire_time, events, suppressed, detail, emitted_at, holdout"
_FIRE_READ = f"{_FIRE_COLUMNS}, NULLIF(part, {SINGLE_LOG})"  # the single-node log's -1 is read as None
_encode = msgspec.json.encode
_decode = msgspec.json.decode


def _quarantine_row(row: tuple[Any, ...]) -> QuarantineRow:
    return QuarantineRow(*row)


def _fire_row(row: tuple[Any, ...]) -> FireRow:
    fire_id, trigger, user_id, key, fire_time, events, suppressed, detail, emitted_at, holdout, partition = row
    return FireRow(
        fire_id, trigger, user_id, _decode(key), fire_time, tuple(_decode(events)), suppressed, detail, emitted_at,
        holdout, partition,
    )  # fmt: skip


class PostgresBatch:
    """The writes of one PostgreSQL transaction, to the log of partition `part` (-1: the single-node log)."""

    def __init__(self, cur: psycopg.Cursor[Any], part: int, what: str) -> None:
        self.cur = cur
        self.part = part
        self.what = what
        self.fenced = False

    def _many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.cur.executemany(query, rows)

    def append_events(self, rows: list[LogRow]) -> None:
        # COPY: twice the rows a second of a multi-row INSERT, and the log is the largest write of a batch.
        if not rows:
            return
        with self.cur.copy(
            "COPY events (part, message_id, user_id, anonymous_id, ts, received_at, decision, body, watermark)"
            " FROM STDIN"
        ) as copy:
            part = self.part
            for r in rows:
                copy.write_row((part, r.message_id, r.user_id, r.anonymous_id, r.ts, r.received_at, r.decision,
                                r.body, r.watermark))  # fmt: skip

    def quarantine(self, rows: list[QuarantineRow], logged: list[str]) -> None:
        self._many(
            "INSERT INTO quarantine (part, message_id, user_id, anonymous_id, ts, received_at, quarantined_at, reason,"
            " body, retried_at, retry_decision) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(self.part, r.message_id, r.user_id, r.anonymous_id, r.ts, r.received_at, r.quarantined_at, r.reason,
              r.body, r.retried_at, r.retry_decision) for r in rows],
        )  # fmt: skip
        # The latest accepted row of a messageId is the waiting one (as in the SQLite adapter).
        self._many(
            "UPDATE events SET decision = 'quarantined' WHERE part = %s AND seq ="
            " (SELECT MAX(seq) FROM events WHERE part = %s AND message_id = %s AND decision = 'accepted')",
            [(self.part, self.part, mid) for mid in logged],
        )

    def mark_retried(self, entry: int, at: int, decision: str) -> None:
        self.cur.execute(
            "UPDATE quarantine SET retried_at = %s, retry_decision = %s WHERE part = %s AND id = %s",
            (at, decision, self.part, entry),
        )

    def save_position(self, source: str, position: int) -> None:
        check_position(source, position)
        self.cur.execute(
            "INSERT INTO positions (part, source, position) VALUES (%s, %s, %s)"
            " ON CONFLICT (part, source) DO UPDATE SET position = excluded.position",
            (self.part, source, position),
        )

    def check_owner(self, epoch: int) -> None:
        # FOR UPDATE holds the owner row to the end of this transaction: a claim (an update of
        # that row) waits for the commit, and a check after a claim reads the claim's epoch.
        check_epoch(epoch)
        row = self.cur.execute("SELECT epoch FROM owner WHERE part = %s FOR UPDATE", (self.part,)).fetchone()
        if row is None or row[0] != epoch:
            self.fenced = True
            raise FencedError(self.what)

    def save_users(self, states: dict[str, bytes | None]) -> None:
        # One statement over arrays (keys are unique, as ON CONFLICT DO UPDATE needs): twice a row-by-row upsert.
        kept = {uid: state for uid, state in states.items() if state is not None}
        if kept:
            self.cur.execute(
                "INSERT INTO users (part, uid, state) SELECT %s, * FROM unnest(%s::text[], %s::bytea[])"
                " ON CONFLICT (part, uid) DO UPDATE SET state = excluded.state",
                (self.part, list(kept), list(kept.values())),
            )
        gone = [uid for uid, state in states.items() if state is None]
        if gone:
            self.cur.execute("DELETE FROM users WHERE part = %s AND uid = ANY(%s)", (self.part, gone))

    def save_links(self, links: dict[str, str]) -> None:
        if links:
            self.cur.execute(
                "INSERT INTO links (part, id, target) SELECT %s, * FROM unnest(%s::text[], %s::text[])"
                " ON CONFLICT (part, id) DO UPDATE SET target = excluded.target",
                (self.part, list(links), list(links.values())),
            )

    def save_meta(self, meta: bytes) -> None:
        self.cur.execute(
            "INSERT INTO meta (part, name, value) VALUES (%s, 'engine', %s)"
            " ON CONFLICT (part, name) DO UPDATE SET value = excluded.value",
            (self.part, meta),
        )

    def add_deliveries(self, rows: list[NewDelivery]) -> None:
        self._many(
            "INSERT INTO deliveries (part, fire_id, action, channel, trigger, user_id, status, next_at, created_at,"
            " updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s, %s, %s) ON CONFLICT (fire_id, action)"
            " DO NOTHING",
            [(self.part, d.fire_id, d.action, d.channel, d.trigger, d.user_id, d.next_at, d.next_at, d.next_at)
             for d in rows],
        )  # fmt: skip

    def add_fires(self, fires: list[FireRow]) -> None:
        check_fire_partitions(fires, None if self.part == SINGLE_LOG else self.part)
        self._many(
            f"INSERT INTO fires (part, {_FIRE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (fire_id) DO NOTHING",
            [(self.part, f.fire_id, f.trigger, f.user_id, _encode(f.key).decode(), f.fire_time,
              _encode(list(f.events)).decode(), f.suppressed, f.detail, f.emitted_at, f.holdout) for f in fires],
        )  # fmt: skip


class PostgresStore:
    """The log, state, fires and quarantine in one PostgreSQL schema; the log of `partition` (None: the single node)."""

    def __init__(self, db: PostgresDatabase, *, partition: int | None = None) -> None:
        self.db = db
        self.partition = check_partition(partition)
        self._part = SINGLE_LOG if partition is None else partition
        self._what = describe(partition)

    def open(self) -> None:
        self.db.migrate()

    def close(self) -> None:
        self.db.close()

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints and vacuums on its own."""

    def migrations(self) -> list[tuple[int, str]]:
        return self.db.migrations()

    @contextmanager
    def write(self, *, commit: bool = True) -> Iterator[PostgresBatch]:
        with self.db.transaction(commit=commit) as conn, conn.cursor() as cur:
            batch = PostgresBatch(cur, self._part, self._what)
            yield batch
            if batch.fenced:  # a caller that caught the FencedError still commits nothing
                raise FencedError(self._what)

    def claim_owner(self, owner: str) -> int:
        check_owner(owner)
        # One statement, so atomic: concurrent claims queue on the row and each gets its own epoch.
        with self.db.connection() as conn:
            row = conn.execute(
                "INSERT INTO owner (part, epoch, holder) VALUES (%s, 1, %s) ON CONFLICT (part) DO UPDATE"
                " SET epoch = owner.epoch + 1, holder = excluded.holder, claimed_at = now() RETURNING epoch",
                (self._part, owner),
            ).fetchone()
        assert row is not None, "an upsert with RETURNING returns its row"
        return int(row[0])

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.db.connection() as conn:
            return conn.execute(query, params).fetchall()

    def _stream(self, query: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        """Rows read in chunks through a server-side cursor, for reads as long as the whole log."""
        with self.db.transaction() as conn, conn.cursor(name="tripwire_stream") as cur:
            cur.itersize = 2_000
            cur.execute(query, params)
            yield from cur

    # -- recovery ----------------------------------------------------------------------

    def load_meta(self) -> bytes | None:
        rows = self._rows("SELECT value FROM meta WHERE part = %s AND name = 'engine'", (self._part,))
        return bytes(rows[0][0]) if rows else None

    def load_links(self) -> dict[str, str]:
        return dict(self._rows("SELECT id, target FROM links WHERE part = %s", (self._part,)))

    def iter_users(self) -> Iterator[tuple[str, bytes]]:
        for uid, state in self._stream("SELECT uid, state FROM users WHERE part = %s", (self._part,)):
            yield uid, bytes(state)

    def accepted_ids_since(self, ts: int) -> Iterator[tuple[str, int]]:
        query = (
            "SELECT message_id, ts FROM events WHERE part = %s AND decision IN ('accepted', 'quarantined')"
            " AND ts >= %s ORDER BY seq"
        )
        yield from self._stream(query, (self._part, ts))

    def accepted_after(self, ts: int) -> Iterator[LogRow]:
        query = f"SELECT {_LOG_COLUMNS} FROM events WHERE part = %s AND decision = 'accepted' AND ts > %s ORDER BY seq"
        for row in self._stream(query, (self._part, ts)):
            yield LogRow(*row)

    def iter_log(self) -> Iterator[LogRow]:
        for row in self._stream(f"SELECT {_LOG_COLUMNS} FROM events WHERE part = %s ORDER BY seq", (self._part,)):
            yield LogRow(*row)

    def load_position(self, source: str) -> int | None:
        check_source(source)
        rows = self._rows("SELECT position FROM positions WHERE part = %s AND source = %s", (self._part, source))
        return int(rows[0][0]) if rows else None

    # -- queries -----------------------------------------------------------------------

    def user_state(self, uid: str) -> bytes | None:
        rows = self._rows("SELECT state FROM users WHERE part = %s AND uid = %s", (self._part, uid))
        return bytes(rows[0][0]) if rows else None

    # Fires are shared by every partition: these reads answer for all of them.

    def fires(
        self, *, trigger: str | None = None, user: str | None = None, since: int | None = None, limit: int = 100
    ) -> list[FireRow]:
        where, params = filtered((("trigger = %s", trigger), ("user_id = %s", user), ("fire_time >= %s", since)))
        query = f"SELECT {_FIRE_READ} FROM fires{where} ORDER BY fire_time DESC, n DESC LIMIT %s"
        return [_fire_row(row) for row in self._rows(query, (*params, limit))]

    def fire_counts(self) -> dict[str, tuple[int, int]]:
        rows = self._rows(
            "SELECT trigger, COUNT(*) FILTER (WHERE suppressed IS NULL), COUNT(*) FILTER (WHERE suppressed IS NOT NULL)"
            " FROM fires GROUP BY trigger"
        )
        return {trigger: (fired, suppressed) for trigger, fired, suppressed in rows}

    def events(self, *, users: list[str] | None = None, limit: int = 100) -> list[LogRow]:
        if users is None:
            rows = self._rows(
                f"SELECT {_LOG_COLUMNS} FROM events WHERE part = %s ORDER BY seq DESC LIMIT %s", (self._part, limit)
            )
        else:
            rows = self._rows(
                f"SELECT {_LOG_COLUMNS} FROM events WHERE part = %s AND (user_id = ANY(%s) OR anonymous_id = ANY(%s))"
                " ORDER BY seq DESC LIMIT %s",
                (self._part, users, users, limit),
            )
        return [LogRow(*row) for row in rows]

    def fire(self, fire_id: str) -> FireRow | None:
        rows = self._rows(f"SELECT {_FIRE_READ} FROM fires WHERE fire_id = %s", (fire_id,))
        return _fire_row(rows[0]) if rows else None

    def events_by_id(self, message_ids: list[str]) -> list[LogRow]:
        rows = self._rows(
            f"SELECT {_LOG_COLUMNS} FROM events WHERE part = %s AND message_id = ANY(%s) AND decision = 'accepted'"
            " ORDER BY seq",
            (self._part, message_ids),
        )
        return [LogRow(*row) for row in rows]

    def quarantined(self, *, limit: int = 100, pending_only: bool = False) -> list[QuarantineRow]:
        pending = " AND retried_at IS NULL" if pending_only else ""
        query = f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE part = %s{pending} ORDER BY id DESC LIMIT %s"
        return [_quarantine_row(row) for row in self._rows(query, (self._part, limit))]

    def quarantine_entry(self, entry: int) -> QuarantineRow | None:
        query = f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE part = %s AND id = %s"
        rows = self._rows(query, (self._part, entry))
        return _quarantine_row(rows[0]) if rows else None

    def quarantine_counts(self) -> tuple[int, int]:
        [(count, pending)] = self._rows(
            "SELECT COUNT(*), COUNT(*) - COUNT(retried_at) FROM quarantine WHERE part = %s", (self._part,)
        )
        return int(count), int(pending)

    def links_to(self, uid: str) -> list[str]:
        return [row[0] for row in self._rows("SELECT id FROM links WHERE part = %s AND target = %s", (self._part, uid))]
