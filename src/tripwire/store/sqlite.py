"""The embedded store on SQLite: one file, WAL, one writer, durable commits."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from tripwire.errors import FencedError
from tripwire.store.base import FireRow, LogRow, NewDelivery, QuarantineRow
from tripwire.store.partitions import (
    check_epoch,
    check_fire_partitions,
    check_owner,
    check_position,
    check_source,
    describe,
)
from tripwire.store.sqlite_schema import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "SqliteBatch",
    "SqliteFile",
    "SqliteStore",
    "connect",
    "filtered",
    "secure_folder",
    "transaction",
]

_LOG_COLUMNS = "seq, message_id, user_id, anonymous_id, ts, received_at, decision, body, watermark"
_QUARANTINE_COLUMNS = (
    "id, message_id, user_id, anonymous_id, ts, received_at, quarantined_at, reason, body, retried_at, retry_decision"
)
# The event log holds personal data: only the server's own user may read the folder and files.
FOLDER_MODE = 0o700
FILE_MODE = 0o600
_FIRE_COLUMNS = "fire_id, trigger, user_id, key, fire_time, events, suppressed, detail, emitted_at, holdout"
_encode = msgspec.json.encode
_decode = msgspec.json.decode


def secure_folder(folder: Path) -> None:
    """Create `folder` (and parents) if needed, readable by its owner only."""
    folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    if folder.stat().st_mode & 0o777 != FOLDER_MODE:
        folder.chmod(FOLDER_MODE)


def connect(path: Path) -> sqlite3.Connection:
    # SQLite gives its -wal and -shm files the mode of the database file, so that one is enough.
    # Never open and close a descriptor of a database this process may have open: closing any
    # descriptor of a file drops every POSIX lock the process holds on it, and SQLite's with them.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        if path.stat().st_mode & 0o777 != FILE_MODE:
            path.chmod(FILE_MODE)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: each commit is on disk before the server acknowledges (group commit keeps it cheap).
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, *, commit: bool = True) -> Iterator[sqlite3.Connection]:
    """One write transaction: `BEGIN IMMEDIATE` takes the write lock at once (no upgrade deadlock);
    committed when the block exits cleanly (rolled back with `commit` off), rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT" if commit else "ROLLBACK")


def filtered(filters: tuple[tuple[str, Any], ...]) -> tuple[str, list[Any]]:
    """A ` WHERE ...` of the clauses whose value is given (all ANDed), and their parameters."""
    given = [(clause, value) for clause, value in filters if value is not None]
    if not given:
        return "", []
    return " WHERE " + " AND ".join(clause for clause, _ in given), [value for _, value in given]


class SqliteFile:
    """The server's SQLite file, with one connection per thread (sqlite3 connections are not shared)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / "tripwire.db"
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn


def _log_row(row: tuple[Any, ...]) -> LogRow:
    return LogRow(*row)


def _quarantine_row(row: tuple[Any, ...]) -> QuarantineRow:
    entry, message_id, user_id, anonymous_id, ts, received_at, quarantined_at, reason, body, retried, decision = row
    return QuarantineRow(
        entry,
        message_id,
        user_id,
        anonymous_id,
        ts,
        received_at,
        quarantined_at,
        reason,
        bytes(body),
        retried,
        decision,
    )


def _fire_row(row: tuple[Any, ...]) -> FireRow:
    fire_id, trigger, user_id, key, fire_time, events, suppressed, detail, emitted_at, holdout = row
    return FireRow(
        fire_id, trigger, user_id, _decode(key), fire_time, tuple(_decode(events)), suppressed, detail, emitted_at,
        bool(holdout),
    )  # fmt: skip


class SqliteBatch:
    """The writes of one SQLite transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.fenced = False

    def append_events(self, rows: list[LogRow]) -> None:
        self.conn.executemany(
            "INSERT INTO events (message_id, user_id, anonymous_id, ts, received_at, decision, body, watermark)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.message_id, r.user_id, r.anonymous_id, r.ts, r.received_at, r.decision, r.body, r.watermark)
                for r in rows
            ],
        )

    def quarantine(self, rows: list[QuarantineRow], logged: list[str]) -> None:
        """Keep `rows` in the quarantine; the accepted log rows of `logged` become quarantined."""
        self.conn.executemany(
            "INSERT INTO quarantine (message_id, user_id, anonymous_id, ts, received_at, quarantined_at, reason, body,"
            " retried_at, retry_decision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.message_id, r.user_id, r.anonymous_id, r.ts, r.received_at, r.quarantined_at, r.reason, r.body,
              r.retried_at, r.retry_decision) for r in rows],
        )  # fmt: skip
        # The latest accepted row of a messageId is the waiting one: an older row of the same id
        # (reused after the dedup window) was applied long ago and stays as it is.
        self.conn.executemany(
            "UPDATE events SET decision = 'quarantined' WHERE seq ="
            " (SELECT MAX(seq) FROM events WHERE message_id = ? AND decision = 'accepted')",
            [(mid,) for mid in logged],
        )

    def mark_retried(self, entry: int, at: int, decision: str) -> None:
        self.conn.execute(
            "UPDATE quarantine SET retried_at = ?, retry_decision = ? WHERE id = ?", (at, decision, entry)
        )

    def save_position(self, source: str, position: int) -> None:
        check_position(source, position)
        self.conn.execute(
            "INSERT INTO positions (source, position) VALUES (?, ?)"
            " ON CONFLICT (source) DO UPDATE SET position = excluded.position",
            (source, position),
        )

    def check_owner(self, epoch: int) -> None:
        # The transaction holds SQLite's write lock (BEGIN IMMEDIATE), which a claim needs too.
        check_epoch(epoch)
        row = self.conn.execute("SELECT epoch FROM owner").fetchone()
        if row is None or row[0] != epoch:
            self.fenced = True
            raise FencedError(describe(None))

    def save_users(self, states: dict[str, bytes | None]) -> None:
        self.conn.executemany(
            "INSERT INTO users (uid, state) VALUES (?, ?) ON CONFLICT (uid) DO UPDATE SET state = excluded.state",
            [(uid, state) for uid, state in states.items() if state is not None],
        )
        self.conn.executemany(
            "DELETE FROM users WHERE uid = ?", [(uid,) for uid, state in states.items() if state is None]
        )

    def save_links(self, links: dict[str, str]) -> None:
        self.conn.executemany(
            "INSERT INTO links (id, target) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET target = excluded.target",
            list(links.items()),
        )

    def save_meta(self, meta: bytes) -> None:
        self.conn.execute(
            "INSERT INTO meta (name, value) VALUES ('engine', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (meta,),
        )

    def add_deliveries(self, rows: list[NewDelivery]) -> None:
        self.conn.executemany(
            "INSERT INTO deliveries (fire_id, action, channel, trigger, user_id, status, next_at, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT (fire_id, action) DO NOTHING",
            [(d.fire_id, d.action, d.channel, d.trigger, d.user_id, d.next_at, d.next_at, d.next_at) for d in rows],
        )

    def add_fires(self, fires: list[FireRow]) -> None:
        check_fire_partitions(fires, None)  # one log: every fire read back has partition None
        self.conn.executemany(
            f"INSERT INTO fires ({_FIRE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (fire_id) DO NOTHING",
            [
                (
                    f.fire_id,
                    f.trigger,
                    f.user_id,
                    _encode(f.key).decode(),
                    f.fire_time,
                    _encode(list(f.events)).decode(),
                    f.suppressed,
                    f.detail,
                    f.emitted_at,
                    int(f.holdout),
                )
                for f in fires
            ],
        )


class SqliteStore(SqliteFile):
    """All of a server's durable state in one SQLite file (`DATA/tripwire.db`).

    Writes go through one connection (`write()`); reads use one connection per thread.
    It keeps one log: `partition` is always None (partitions need PostgreSQL).
    """

    partition: None = None

    def __init__(self, data_dir: str | Path) -> None:
        super().__init__(data_dir)
        self.data_dir = Path(data_dir)
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        self.close()
        secure_folder(self.data_dir)
        self._writer = connect(self.path)
        # Commits never checkpoint the WAL themselves (a checkpoint inside a commit stalls
        # every request waiting on it); `checkpoint()` does it from another thread.
        self._writer.execute("PRAGMA wal_autocheckpoint = 0")
        conn = self._writer
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in MIGRATIONS:
            if version in applied:
                continue
            with transaction(conn):
                for statement in sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name))

    def checkpoint(self) -> None:
        """Copy the WAL into the database without blocking the writer (call it from its own thread)."""
        self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def migrations(self) -> list[tuple[int, str]]:
        return [(v, n) for v, n in self._conn().execute("SELECT version, name FROM schema_migrations ORDER BY version")]

    @contextmanager
    def write(self, *, commit: bool = True) -> Iterator[SqliteBatch]:
        conn = self._writer
        assert conn is not None, "open() the store first"
        with self._write_lock, transaction(conn, commit=commit):
            batch = SqliteBatch(conn)
            yield batch
            if batch.fenced:  # a caller that caught the FencedError still commits nothing
                raise FencedError(describe(None))

    def claim_owner(self, owner: str) -> int:
        check_owner(owner)
        conn = self._writer
        assert conn is not None, "open() the store first"
        with self._write_lock, transaction(conn):
            [(epoch,)] = conn.execute(
                "INSERT INTO owner (log, epoch, holder) VALUES (0, 1, ?) ON CONFLICT (log) DO UPDATE"
                " SET epoch = owner.epoch + 1, holder = excluded.holder, claimed_at = excluded.claimed_at"
                " RETURNING epoch",
                (owner,),
            ).fetchall()
        return int(epoch)

    # -- recovery ------------------------------------------------------------------------

    def load_meta(self) -> bytes | None:
        row = self._conn().execute("SELECT value FROM meta WHERE name = 'engine'").fetchone()
        return bytes(row[0]) if row else None

    def load_links(self) -> dict[str, str]:
        return dict(self._conn().execute("SELECT id, target FROM links"))

    def iter_users(self) -> Iterator[tuple[str, bytes]]:
        yield from self._conn().execute("SELECT uid, state FROM users")

    def accepted_ids_since(self, ts: int) -> Iterator[tuple[str, int]]:
        yield from self._conn().execute(
            "SELECT message_id, ts FROM events WHERE decision IN ('accepted', 'quarantined') AND ts >= ? ORDER BY seq",
            (ts,),
        )

    def accepted_after(self, ts: int) -> Iterator[LogRow]:
        query = f"SELECT {_LOG_COLUMNS} FROM events WHERE decision = 'accepted' AND ts > ? ORDER BY seq"
        for row in self._conn().execute(query, (ts,)):
            yield _log_row(row)

    def iter_log(self) -> Iterator[LogRow]:
        for row in self._conn().execute(f"SELECT {_LOG_COLUMNS} FROM events ORDER BY seq"):
            yield _log_row(row)

    def load_position(self, source: str) -> int | None:
        check_source(source)
        row = self._conn().execute("SELECT position FROM positions WHERE source = ?", (source,)).fetchone()
        return None if row is None else int(row[0])

    # -- queries ---------------------------------------------------------------------------

    def user_state(self, uid: str) -> bytes | None:
        row = self._conn().execute("SELECT state FROM users WHERE uid = ?", (uid,)).fetchone()
        return bytes(row[0]) if row else None

    def fires(
        self, *, trigger: str | None = None, user: str | None = None, since: int | None = None, limit: int = 100
    ) -> list[FireRow]:
        where, params = filtered((("trigger = ?", trigger), ("user_id = ?", user), ("fire_time >= ?", since)))
        sql = f"SELECT {_FIRE_COLUMNS} FROM fires{where} ORDER BY fire_time DESC, n DESC LIMIT ?"
        return [_fire_row(row) for row in self._conn().execute(sql, (*params, limit))]

    def fire_counts(self) -> dict[str, tuple[int, int]]:
        rows = self._conn().execute(
            "SELECT trigger, SUM(suppressed IS NULL), SUM(suppressed IS NOT NULL) FROM fires GROUP BY trigger"
        )
        return {trigger: (fired, suppressed) for trigger, fired, suppressed in rows}

    def events(self, *, users: list[str] | None = None, limit: int = 100) -> list[LogRow]:
        if users is None:
            rows = self._conn().execute(f"SELECT {_LOG_COLUMNS} FROM events ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            marks = ", ".join("?" * len(users))
            rows = self._conn().execute(
                f"SELECT {_LOG_COLUMNS} FROM events WHERE user_id IN ({marks}) OR anonymous_id IN ({marks})"
                " ORDER BY seq DESC LIMIT ?",
                (*users, *users, limit),
            )
        return [_log_row(row) for row in rows]

    def fire(self, fire_id: str) -> FireRow | None:
        row = self._conn().execute(f"SELECT {_FIRE_COLUMNS} FROM fires WHERE fire_id = ?", (fire_id,)).fetchone()
        return _fire_row(row) if row else None

    def events_by_id(self, message_ids: list[str]) -> list[LogRow]:
        """The accepted events with these messageIds, in arrival order."""
        marks = ", ".join("?" * len(message_ids))
        rows = self._conn().execute(
            f"SELECT {_LOG_COLUMNS} FROM events WHERE message_id IN ({marks}) AND decision = 'accepted' ORDER BY seq",
            message_ids,
        )
        return [_log_row(row) for row in rows]

    def quarantined(self, *, limit: int = 100, pending_only: bool = False) -> list[QuarantineRow]:
        where = " WHERE retried_at IS NULL" if pending_only else ""
        sql = f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine{where} ORDER BY id DESC LIMIT ?"
        return [_quarantine_row(row) for row in self._conn().execute(sql, (limit,))]

    def quarantine_entry(self, entry: int) -> QuarantineRow | None:
        sql = f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?"
        row = self._conn().execute(sql, (entry,)).fetchone()
        return _quarantine_row(row) if row else None

    def quarantine_counts(self) -> tuple[int, int]:
        """(events quarantined, of which not retried yet)."""
        row = self._conn().execute("SELECT COUNT(*), COUNT(*) - COUNT(retried_at) FROM quarantine").fetchone()
        return int(row[0]), int(row[1])

    def links_to(self, uid: str) -> list[str]:
        return [row[0] for row in self._conn().execute("SELECT id FROM links WHERE target = ?", (uid,))]
