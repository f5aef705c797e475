"""The connection pool, the schema and the migrations of the cluster's PostgreSQL store.

Every table lives in one schema (default `tripwire`), set as each connection's
`search_path`, so several deployments or test runs can share a database. The adapters
(`postgres.py`, `postgres_outbox.py`, `postgres_goals.py`, `postgres_inbox.py`) share one
`PostgresDatabase`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.string import StrDumperUnknown, TextLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from tripwire.errors import StoreUnavailableError
from tripwire.store.partitions import StoreLocationError

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
    (
        2,
        "a partition column in the key of each per-log table; positions and the owner's epoch of each log",
        # Rows already there are the single-node log's (-1). The default is dropped once they
        # have it, so a write that forgets its partition fails instead of landing in that log.
        # Indexes by user, anonymous id, messageId and link target stay without the partition:
        # a user's rows are in one partition, and the goal sweep reads them across partitions.
        """
        ALTER TABLE events ADD COLUMN part INTEGER NOT NULL DEFAULT -1;
        ALTER TABLE events ALTER COLUMN part DROP DEFAULT;
        ALTER TABLE events DROP CONSTRAINT events_pkey;
        ALTER TABLE events ADD PRIMARY KEY (part, seq);
        CREATE INDEX events_seq ON events (seq);
        DROP INDEX events_accepted_ts;
        CREATE INDEX events_accepted_ts ON events (part, ts) WHERE decision = 'accepted';
        ALTER TABLE users ADD COLUMN part INTEGER NOT NULL DEFAULT -1;
        ALTER TABLE users ALTER COLUMN part DROP DEFAULT;
        ALTER TABLE users DROP CONSTRAINT users_pkey;
        ALTER TABLE users ADD PRIMARY KEY (part, uid);
        ALTER TABLE links ADD COLUMN part INTEGER NOT NULL DEFAULT -1;
        ALTER TABLE links ALTER COLUMN part DROP DEFAULT;
        ALTER TABLE links DROP CONSTRAINT links_pkey;
        ALTER TABLE links ADD PRIMARY KEY (part, id);
        ALTER TABLE meta ADD COLUMN part INTEGER NOT NULL DEFAULT -1;
        ALTER TABLE meta ALTER COLUMN part DROP DEFAULT;
        ALTER TABLE meta DROP CONSTRAINT meta_pkey;
        ALTER TABLE meta ADD PRIMARY KEY (part, name);
        ALTER TABLE quarantine ADD COLUMN part INTEGER NOT NULL DEFAULT -1;
        ALTER TABLE quarantine ALTER COLUMN part DROP DEFAULT;
        ALTER TABLE quarantine DROP CONSTRAINT quarantine_pkey;
        ALTER TABLE quarantine ADD PRIMARY KEY (part, id);
        CREATE TABLE positions (
            part INTEGER NOT NULL,
            source TEXT NOT NULL,
            position BIGINT NOT NULL,
            PRIMARY KEY (part, source)
        );
        CREATE TABLE owner (
            part INTEGER PRIMARY KEY,
            epoch BIGINT NOT NULL,
            holder TEXT NOT NULL,
            claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        3,
        "the partition that recorded each fire and queued each delivery",
        # As in migration 2: rows already there are the single-node log's (-1), and the default
        # is dropped so a write that forgets its partition fails. Not in any key: a fire_id and a
        # (fire_id, action) stay unique across partitions, and no read selects by partition.
        """
        ALTER TABLE fires ADD COLUMN part INTEGER NOT NULL DEFAULT -1;
        ALTER TABLE fires ALTER COLUMN part DROP DEFAULT;
        ALTER TABLE deliveries ADD COLUMN part INTEGER NOT NULL DEFAULT -1;
        ALTER TABLE deliveries ALTER COLUMN part DROP DEFAULT;
        """,
    ),
    (
        4,
        "the ids a person was linked under, and the record key their events take",
        # Written by ingest nodes for identify and alias events only; read for every event.
        """
        CREATE TABLE identities (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL
        );
        """,
    ),
]

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
CONNECT_TIMEOUT_S = 10
# How long a caller waits for a connection of the pool (the server away: a restart) before
# its store call raises PostgresUnavailableError; the pool goes on reconnecting meanwhile.
CHECKOUT_TIMEOUT_S = 5.0
# A session left idle inside a transaction this long is ended by the server, releasing its
# locks: a worker paused (SIGSTOP, a stalled VM) mid-transaction cannot hold the partition's
# owner row from the worker that takes its partitions. tripwire never idles in a transaction.
IDLE_IN_TRANSACTION_S = 15


class PostgresLocationError(StoreLocationError):
    """A PostgreSQL location or schema name cannot be used."""


class PostgresUnavailableError(StoreUnavailableError):
    """The PostgreSQL server cannot be reached, refuses the connection, or lost it (a restart)."""


# The SQLSTATE classes of a failure that is the server's state, not the statement's: a lost
# or refused connection (08), an operator's intervention such as a shutdown or a restart
# (57P), insufficient resources (53), a transaction the server ended (25P03, idle too long)
# and a conflict with another transaction (40: a deadlock, a serialization failure). The
# same step tried again later can succeed. A statement the server refuses for what it holds
# (54, a value beyond a limit; 22, bad data) is not among them: retrying it would fail
# forever, so it stays an error the pipeline's fault isolation can pin on an event.
_TRANSIENT = ("08", "57P", "53", "25P03", "40")


def transient(exc: BaseException, conn: psycopg.Connection[Any] | None = None) -> bool:
    """Whether `exc` (raised on `conn`) says the server is away or busy rather than the statement wrong."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    if conn is not None and conn.broken:
        return True
    state = exc.sqlstate
    if state is None:  # raised by the client: the connection failed or was closed under it
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith(_TRANSIENT)


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
        try:
            self._params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise PostgresLocationError(f"postgres: not a PostgreSQL connection string ({exc})") from None
        self.dsn = dsn
        self.schema = schema
        self._max_size = max_size
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.adapters.register_dumper(str, _NulSafeDumper)
        conn.adapters.register_loader("text", _NulSafeLoader)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        conn.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_S}s'")

    def where(self) -> str:
        """The server, database and user, never the password: for messages."""
        p = self._params
        return f"{p.get('user', '')}@{p.get('host', 'localhost')}:{p.get('port', 5432)}/{p.get('dbname', '')}"

    def _probe(self) -> None:
        """Connect once, so an unreachable server or a refused login is an error that says so, at once."""
        try:
            psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S).close()
        except psycopg.Error as exc:
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PostgresUnavailableError(
                f"postgres: cannot connect to {self.where()}: {cause} (is it running? scripts/services start"
                " starts one for development)"
            ) from None

    def pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._probe()
                pool = ConnectionPool(
                    self.dsn,
                    min_size=1,
                    max_size=self._max_size,
                    kwargs={"autocommit": True},
                    configure=self._configure,
                    check=ConnectionPool.check_connection,  # a connection from before a server restart is replaced
                    timeout=CHECKOUT_TIMEOUT_S,
                    open=False,
                    name=f"tripwire-{self.schema}",
                )
                pool.open(wait=True, timeout=30)
                self._pool = pool
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in autocommit mode: each statement is its own transaction unless in `transaction()`.

        A failure of the server rather than of a statement (see `transient`) is raised as
        PostgresUnavailableError, so callers can wait and try again."""
        conn: psycopg.Connection[Any] | None = None
        try:
            with self.pool().connection() as conn:
                yield conn
        except psycopg.Error as exc:
            if not transient(exc, conn):
                raise
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PostgresUnavailableError(f"postgres: {self.where()}: {cause}") from exc

    @contextmanager
    def transaction(self, *, commit: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on one connection: committed when the block exits cleanly (rolled back
        with `commit` off), rolled back on any error; server failures raised as in `connection()`."""
        with self.connection() as conn, conn.transaction(force_rollback=not commit):
            yield conn

    def migrate(self) -> None:
        """Create the schema and apply the migrations not applied yet; several processes at once apply each once."""
        with self.transaction() as conn:
            # The lock is per schema and held to the commit, so a second opener waits and then finds them applied.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tripwire-migrations:{self.schema}",))
            # Created only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even then.
            if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
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
