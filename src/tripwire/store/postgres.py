"""The cluster's store on PostgreSQL: one schema of a database, reached through a connection pool.

`PostgresDatabase` owns the pool and the migrations; `PostgresStore` (here) and the
outbox, goals and inbox adapters (`postgres_*.py`) share one. Every table lives in the
schema given (default `tripwire`), set as each connection's `search_path`, so several
deployments or test runs can share a database. The semantics are those of the SQLite
adapter, held to by the same contract tests.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.string import StrDumperUnknown, TextLoader
from psycopg_pool import ConnectionPool

from tripwire.errors import TripwireError
from tripwire.store.base import FireRow, LogRow, NewDelivery, QuarantineRow
from tripwire.store.sqlite import filtered

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "event log, user state, meta, links, fires, quarantine, deliveries, attempts, conversions, inbox",
        """
        CREATE TABLE events (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id TEXT NOT NULL,
            user_id TEXT,
            anonymous_id TEXT,
            ts BIGINT NOT NULL,
            received_at BIGINT NOT NULL,
            decision TEXT NOT NULL,
            body BYTEA NOT NULL,
            watermark BIGINT
        );
        CREATE INDEX events_user ON events (user_id, seq);
        CREATE INDEX events_anonymous ON events (anonymous_id, seq);
        CREATE INDEX events_accepted_ts ON events (ts) WHERE decision = 'accepted';
        CREATE INDEX events_message ON events (message_id);
        CREATE TABLE users (uid TEXT PRIMARY KEY, state BYTEA NOT NULL);
        CREATE TABLE links (id TEXT PRIMARY KEY, target TEXT NOT NULL);
        CREATE INDEX links_target ON links (target);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
        CREATE TABLE fires (
            n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            fire_id TEXT NOT NULL UNIQUE,
            trigger TEXT NOT NULL,
            user_id TEXT NOT NULL,
            key TEXT NOT NULL,
            fire_time BIGINT NOT NULL,
            events TEXT NOT NULL,
            suppressed TEXT,
            detail TEXT,
            emitted_at BIGINT NOT NULL,
            holdout BOOLEAN NOT NULL DEFAULT FALSE
        );
        CREATE INDEX fires_time ON fires (fire_time, n);
        CREATE INDEX fires_user ON fires (user_id, fire_time);
        CREATE INDEX fires_trigger ON fires (trigger, fire_time);
        CREATE TABLE quarantine (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id TEXT NOT NULL,
            user_id TEXT,
            anonymous_id TEXT,
            ts BIGINT NOT NULL,
            received_at BIGINT NOT NULL,
            quarantined_at BIGINT NOT NULL,
            reason TEXT NOT NULL,
            body BYTEA NOT NULL,
            retried_at BIGINT,
            retry_decision TEXT
        );
        CREATE INDEX quarantine_message ON quarantine (message_id);
        CREATE TABLE deliveries (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            fire_id TEXT NOT NULL,
            action TEXT NOT NULL,
            channel TEXT NOT NULL,
            trigger TEXT NOT NULL,
            user_id TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at BIGINT NOT NULL,
            lease_until BIGINT,
            reason TEXT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            delivered_at BIGINT,
            UNIQUE (fire_id, action)
        );
        CREATE INDEX deliveries_due ON deliveries (status, next_at);
        CREATE INDEX deliveries_user ON deliveries (user_id, status, delivered_at);
        CREATE TABLE attempts (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            delivery_id BIGINT NOT NULL REFERENCES deliveries (id),
            attempt INTEGER NOT NULL,
            started_at BIGINT NOT NULL,
            outcome TEXT NOT NULL,
            http_status INTEGER,
            latency_ms DOUBLE PRECISION NOT NULL,
            error TEXT
        );
        CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt);
        CREATE TABLE conversions (
            fire_id TEXT PRIMARY KEY,
            trigger TEXT NOT NULL,
            user_id TEXT NOT NULL,
            holdout BOOLEAN NOT NULL,
            message_id TEXT NOT NULL,
            converted_at BIGINT NOT NULL
        );
        CREATE INDEX conversions_trigger ON conversions (trigger, holdout);
        CREATE TABLE inbox (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id TEXT NOT NULL,
            fire_id TEXT NOT NULL,
            action TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            url TEXT,
            created_at BIGINT NOT NULL,
            expires_at BIGINT,
            read_at BIGINT,
            UNIQUE (fire_id, action)
        );
        CREATE INDEX inbox_user ON inbox (user_id, id);
        """,
    ),
]

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_LOG_COLUMNS = "seq, message_id, user_id, anonymous_id, ts, received_at, decision, body, watermark"
_QUARANTINE_COLUMNS = (
    "id, message_id, user_id, anonymous_id, ts, received_at, quarantined_at, reason, body, retried_at, retry_decision"
)
_FIRE_COLUMNS = "fire_id, trigger, user_id, key, fire_time, events, suppressed, detail, emitted_at, holdout"
_encode = msgspec.json.encode
_decode = msgspec.json.decode


class PostgresLocationError(TripwireError, ValueError):
    """A PostgreSQL location or schema name cannot be used."""


# -- text with NUL -------------------------------------------------------------------------
# PostgreSQL's text cannot hold U+0000, which events may carry (a userId of "a\u0000b" is
# valid JSON and SQLite keeps it). Such a string is stored escaped behind a private-use
# mark: injective, so equality in queries still holds, and every other string is stored as is.
_MARK = "\ue000"
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


class _NulSafeDumper(StrDumperUnknown):
    def dump(self, obj: str) -> bytes:
        if "\x00" in obj or obj.startswith(_MARK):
            obj = _MARK + obj.replace("\\", "\\\\").replace("\x00", "\\0")
        dumped = super().dump(obj)
        assert dumped is not None, "a str always dumps to text"
        return bytes(dumped)


class _NulSafeLoader(TextLoader):
    def load(self, data: Any) -> str | bytes:  # bytes only on a SQL_ASCII connection
        text = super().load(data)
        if isinstance(text, str) and text.startswith(_MARK):
            return _ESCAPED.sub(lambda m: "\x00" if m[1] == "0" else m[1], text[1:])
        return text


class PostgresDatabase:
    """A pool of connections to one schema; opened on first use, closed by `close()` (and reopened after)."""

    def __init__(self, dsn: str, *, schema: str = "tripwire", max_size: int = 8) -> None:
        if not SCHEMA_NAME.fullmatch(schema):
            raise PostgresLocationError(
                f"schema: {schema!r} is not a plain schema name (lower-case letters, digits and _, at most 63,"
                " not starting with a digit)"
            )
        self.dsn = dsn
        self.schema = schema
        self._max_size = max_size
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.adapters.register_dumper(str, _NulSafeDumper)
        conn.adapters.register_loader("text", _NulSafeLoader)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    def pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                pool = ConnectionPool(
                    self.dsn,
                    min_size=1,
                    max_size=self._max_size,
                    kwargs={"autocommit": True},
                    configure=self._configure,
                    open=False,
                    name=f"tripwire-{self.schema}",
                )
                pool.open(wait=True, timeout=30)
                self._pool = pool
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in autocommit mode: each statement is its own transaction unless in `transaction()`."""
        with self.pool().connection() as conn:
            yield conn

    @contextmanager
    def transaction(self, *, commit: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on one connection: committed when the block exits cleanly (rolled back
        with `commit` off), rolled back on any error."""
        with self.pool().connection() as conn, conn.transaction(force_rollback=not commit):
            yield conn

    def migrate(self) -> None:
        """Create the schema and apply the migrations not applied yet; several processes at once apply each once."""
        with self.transaction() as conn:
            # The lock is per schema and held to the commit, so a second opener waits and then finds them applied.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tripwire-migrations:{self.schema}",))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, text in MIGRATIONS:
                if version in applied:
                    continue
                for statement in text.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))

    def migrations(self) -> list[tuple[int, str]]:
        with self.connection() as conn:
            return [(v, n) for v, n in conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _quarantine_row(row: tuple[Any, ...]) -> QuarantineRow:
    return QuarantineRow(*row)


def _fire_row(row: tuple[Any, ...]) -> FireRow:
    fire_id, trigger, user_id, key, fire_time, events, suppressed, detail, emitted_at, holdout = row
    return FireRow(
        fire_id, trigger, user_id, _decode(key), fire_time, tuple(_decode(events)), suppressed, detail, emitted_at,
        holdout,
    )  # fmt: skip


class PostgresBatch:
    """The writes of one PostgreSQL transaction."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.cur = conn.cursor()

    def _many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.cur.executemany(query, rows)

    def append_events(self, rows: list[LogRow]) -> None:
        self._many(
            "INSERT INTO events (message_id, user_id, anonymous_id, ts, received_at, decision, body, watermark)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(r.message_id, r.user_id, r.anonymous_id, r.ts, r.received_at, r.decision, r.body, r.watermark)
             for r in rows],
        )  # fmt: skip

    def quarantine(self, rows: list[QuarantineRow], logged: list[str]) -> None:
        self._many(
            "INSERT INTO quarantine (message_id, user_id, anonymous_id, ts, received_at, quarantined_at, reason, body)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(r.message_id, r.user_id, r.anonymous_id, r.ts, r.received_at, r.quarantined_at, r.reason, r.body)
             for r in rows],
        )  # fmt: skip
        # The latest accepted row of a messageId is the waiting one (as in the SQLite adapter).
        self._many(
            "UPDATE events SET decision = 'quarantined' WHERE seq ="
            " (SELECT MAX(seq) FROM events WHERE message_id = %s AND decision = 'accepted')",
            [(mid,) for mid in logged],
        )

    def mark_retried(self, entry: int, at: int, decision: str) -> None:
        self.cur.execute(
            "UPDATE quarantine SET retried_at = %s, retry_decision = %s WHERE id = %s", (at, decision, entry)
        )

    def save_users(self, states: dict[str, bytes | None]) -> None:
        self._many(
            "INSERT INTO users (uid, state) VALUES (%s, %s) ON CONFLICT (uid) DO UPDATE SET state = excluded.state",
            [(uid, state) for uid, state in states.items() if state is not None],
        )
        gone = [uid for uid, state in states.items() if state is None]
        if gone:
            self.cur.execute("DELETE FROM users WHERE uid = ANY(%s)", (gone,))

    def save_links(self, links: dict[str, str]) -> None:
        self._many(
            "INSERT INTO links (id, target) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET target = excluded.target",
            list(links.items()),
        )

    def save_meta(self, meta: bytes) -> None:
        self.cur.execute(
            "INSERT INTO meta (name, value) VALUES ('engine', %s)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (meta,),
        )

    def add_deliveries(self, rows: list[NewDelivery]) -> None:
        self._many(
            "INSERT INTO deliveries (fire_id, action, channel, trigger, user_id, status, next_at, created_at,"
            " updated_at) VALUES (%s, %s, %s, %s, %s, 'pending', %s, %s, %s) ON CONFLICT (fire_id, action) DO NOTHING",
            [(d.fire_id, d.action, d.channel, d.trigger, d.user_id, d.next_at, d.next_at, d.next_at) for d in rows],
        )

    def add_fires(self, fires: list[FireRow]) -> None:
        self._many(
            f"INSERT INTO fires ({_FIRE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (fire_id) DO NOTHING",
            [(f.fire_id, f.trigger, f.user_id, _encode(f.key).decode(), f.fire_time, _encode(list(f.events)).decode(),
              f.suppressed, f.detail, f.emitted_at, f.holdout) for f in fires],
        )  # fmt: skip


class PostgresStore:
    """The log, state, fires and quarantine in one PostgreSQL schema."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

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
        with self.db.transaction(commit=commit) as conn:
            yield PostgresBatch(conn)

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
        rows = self._rows("SELECT value FROM meta WHERE name = 'engine'")
        return bytes(rows[0][0]) if rows else None

    def load_links(self) -> dict[str, str]:
        return dict(self._rows("SELECT id, target FROM links"))

    def iter_users(self) -> Iterator[tuple[str, bytes]]:
        for uid, state in self._stream("SELECT uid, state FROM users"):
            yield uid, bytes(state)

    def accepted_ids_since(self, ts: int) -> Iterator[tuple[str, int]]:
        query = (
            "SELECT message_id, ts FROM events WHERE decision IN ('accepted', 'quarantined') AND ts >= %s ORDER BY seq"
        )
        yield from self._stream(query, (ts,))

    def accepted_after(self, ts: int) -> Iterator[LogRow]:
        query = f"SELECT {_LOG_COLUMNS} FROM events WHERE decision = 'accepted' AND ts > %s ORDER BY seq"
        for row in self._stream(query, (ts,)):
            yield LogRow(*row)

    def iter_log(self) -> Iterator[LogRow]:
        for row in self._stream(f"SELECT {_LOG_COLUMNS} FROM events ORDER BY seq"):
            yield LogRow(*row)

    # -- queries -----------------------------------------------------------------------

    def user_state(self, uid: str) -> bytes | None:
        rows = self._rows("SELECT state FROM users WHERE uid = %s", (uid,))
        return bytes(rows[0][0]) if rows else None

    def fires(
        self, *, trigger: str | None = None, user: str | None = None, since: int | None = None, limit: int = 100
    ) -> list[FireRow]:
        where, params = filtered((("trigger = %s", trigger), ("user_id = %s", user), ("fire_time >= %s", since)))
        query = f"SELECT {_FIRE_COLUMNS} FROM fires{where} ORDER BY fire_time DESC, n DESC LIMIT %s"
        return [_fire_row(row) for row in self._rows(query, (*params, limit))]

    def fire_counts(self) -> dict[str, tuple[int, int]]:
        rows = self._rows(
            "SELECT trigger, COUNT(*) FILTER (WHERE suppressed IS NULL), COUNT(*) FILTER (WHERE suppressed IS NOT NULL)"
            " FROM fires GROUP BY trigger"
        )
        return {trigger: (fired, suppressed) for trigger, fired, suppressed in rows}

    def events(self, *, users: list[str] | None = None, limit: int = 100) -> list[LogRow]:
        if users is None:
            rows = self._rows(f"SELECT {_LOG_COLUMNS} FROM events ORDER BY seq DESC LIMIT %s", (limit,))
        else:
            rows = self._rows(
                f"SELECT {_LOG_COLUMNS} FROM events WHERE user_id = ANY(%s) OR anonymous_id = ANY(%s)"
                " ORDER BY seq DESC LIMIT %s",
                (users, users, limit),
            )
        return [LogRow(*row) for row in rows]

    def fire(self, fire_id: str) -> FireRow | None:
        rows = self._rows(f"SELECT {_FIRE_COLUMNS} FROM fires WHERE fire_id = %s", (fire_id,))
        return _fire_row(rows[0]) if rows else None

    def events_by_id(self, message_ids: list[str]) -> list[LogRow]:
        rows = self._rows(
            f"SELECT {_LOG_COLUMNS} FROM events WHERE message_id = ANY(%s) AND decision = 'accepted' ORDER BY seq",
            (message_ids,),
        )
        return [LogRow(*row) for row in rows]

    def quarantined(self, *, limit: int = 100, pending_only: bool = False) -> list[QuarantineRow]:
        where = " WHERE retried_at IS NULL" if pending_only else ""
        query = f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine{where} ORDER BY id DESC LIMIT %s"
        return [_quarantine_row(row) for row in self._rows(query, (limit,))]

    def quarantine_entry(self, entry: int) -> QuarantineRow | None:
        rows = self._rows(f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE id = %s", (entry,))
        return _quarantine_row(rows[0]) if rows else None

    def quarantine_counts(self) -> tuple[int, int]:
        [(count, pending)] = self._rows("SELECT COUNT(*), COUNT(*) - COUNT(retried_at) FROM quarantine")
        return int(count), int(pending)

    def links_to(self, uid: str) -> list[str]:
        return [row[0] for row in self._rows("SELECT id FROM links WHERE target = %s", (uid,))]
