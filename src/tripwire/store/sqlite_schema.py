"""The SQLite store's schema: versioned migrations, each applied once and recorded in `schema_migrations`."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "event log, user state, meta, links and fires",
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL,
            user_id TEXT,
            anonymous_id TEXT,
            ts INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            decision TEXT NOT NULL,
            body BLOB NOT NULL
        );
        CREATE INDEX events_user ON events (user_id, seq);
        CREATE INDEX events_anonymous ON events (anonymous_id, seq);
        CREATE INDEX events_accepted_ts ON events (ts) WHERE decision = 'accepted';
        CREATE TABLE users (uid TEXT PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE links (id TEXT PRIMARY KEY, target TEXT NOT NULL) WITHOUT ROWID;
        CREATE INDEX links_target ON links (target);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE fires (
            n INTEGER PRIMARY KEY,
            fire_id TEXT NOT NULL UNIQUE,
            trigger TEXT NOT NULL,
            user_id TEXT NOT NULL,
            key TEXT NOT NULL,
            fire_time INTEGER NOT NULL,
            events TEXT NOT NULL,
            suppressed TEXT,
            detail TEXT,
            emitted_at INTEGER NOT NULL
        );
        CREATE INDEX fires_time ON fires (fire_time, n);
        CREATE INDEX fires_user ON fires (user_id, fire_time);
        CREATE INDEX fires_trigger ON fires (trigger, fire_time);
        """,
    ),
    (
        2,
        "deliveries, attempts, conversions and the in-app inbox",
        """
        ALTER TABLE fires ADD COLUMN holdout INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            fire_id TEXT NOT NULL,
            action TEXT NOT NULL,
            channel TEXT NOT NULL,
            trigger TEXT NOT NULL,
            user_id TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at INTEGER NOT NULL,
            lease_until INTEGER,
            reason TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            delivered_at INTEGER,
            UNIQUE (fire_id, action)
        );
        CREATE INDEX deliveries_due ON deliveries (status, next_at);
        CREATE INDEX deliveries_user ON deliveries (user_id, status, delivered_at);
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
            attempt INTEGER NOT NULL,
            started_at INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            http_status INTEGER,
            latency_ms REAL NOT NULL,
            error TEXT
        );
        CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt);
        CREATE TABLE conversions (
            fire_id TEXT PRIMARY KEY,
            trigger TEXT NOT NULL,
            user_id TEXT NOT NULL,
            holdout INTEGER NOT NULL,
            message_id TEXT NOT NULL,
            converted_at INTEGER NOT NULL
        );
        CREATE INDEX conversions_trigger ON conversions (trigger, holdout);
        CREATE TABLE inbox (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            fire_id TEXT NOT NULL,
            action TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            url TEXT,
            created_at INTEGER NOT NULL,
            expires_at INTEGER,
            read_at INTEGER,
            UNIQUE (fire_id, action)
        );
        CREATE INDEX inbox_user ON inbox (user_id, id);
        CREATE INDEX events_message ON events (message_id);
        """,
    ),
    (
        3,
        "the watermark each event was decided at, and the quarantine",
        """
        ALTER TABLE events ADD COLUMN watermark INTEGER;
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL,
            user_id TEXT,
            anonymous_id TEXT,
            ts INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            quarantined_at INTEGER NOT NULL,
            reason TEXT NOT NULL,
            body BLOB NOT NULL,
            retried_at INTEGER,
            retry_decision TEXT
        );
        CREATE INDEX quarantine_message ON quarantine (message_id);
        """,
    ),
    (
        4,
        "positions in the sources read, and the owner's epoch",
        """
        CREATE TABLE positions (source TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE owner (
            log INTEGER PRIMARY KEY CHECK (log = 0),
            epoch INTEGER NOT NULL,
            holder TEXT NOT NULL,
            claimed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        );
        """,
    ),
]
