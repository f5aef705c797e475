"""The store contract (log, state, links, fires, quarantine): every adapter passes these.

The `location` fixture (tests/conftest.py) runs each test on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from pathlib import Path

import pytest

from conftest import StoreLocation
from tripwire.store import FireRow, LogRow, QuarantineRow, SqliteStore, Store, Stores, open_stores
from tripwire.store.postgres_db import MIGRATIONS as POSTGRES_MIGRATIONS
from tripwire.store.postgres_db import PostgresLocationError, PostgresUnavailableError
from tripwire.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS


@pytest.fixture
def store(stores: Stores) -> Store:
    return stores.store


def row(mid: str, ts: int, decision: str = "accepted", user: str | None = "u1", anon: str | None = None) -> LogRow:
    return LogRow(0, mid, user, anon, ts, ts + 5, decision, b'{"m":"%s"}' % mid.encode())


def fire(fid: str, at: int, trigger: str = "t", user: str = "u1", suppressed: str | None = None) -> FireRow:
    return FireRow(fid, trigger, user, {"k": 1} if fid == "f1" else None, at, ("m1", "m2"), suppressed, None, at + 1)


def test_the_log_keeps_arrival_order_and_each_decision(store: Store) -> None:
    with store.write() as batch:
        batch.append_events([row("a", 30), row("b", 10, "late"), row("a", 30, "duplicate")])
    with store.write() as batch:
        batch.append_events([row("c", 20)])
    logged = list(store.iter_log())
    assert [(r.seq, r.message_id, r.decision) for r in logged] == [
        (1, "a", "accepted"), (2, "b", "late"), (3, "a", "duplicate"), (4, "c", "accepted"),
    ]  # fmt: skip
    assert logged[0].body == b'{"m":"a"}' and logged[0].received_at == 35


def test_pending_and_dedup_reads_see_accepted_events_only(store: Store) -> None:
    with store.write() as batch:
        batch.append_events([row("a", 10), row("b", 20, "late"), row("c", 30), row("d", 40)])
    assert [r.message_id for r in store.accepted_after(10)] == ["c", "d"]
    assert list(store.accepted_ids_since(30)) == [("c", 30), ("d", 40)]


def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as batch:
        batch.append_events([row("a", 10)])
        batch.save_users({"u1": b"state"})
        batch.add_fires([fire("f1", 10)])
        raise RuntimeError("crash before commit")
    assert list(store.iter_log()) == []
    assert store.user_state("u1") is None
    assert store.fires() == []


def test_user_states_upsert_and_delete(store: Store) -> None:
    with store.write() as batch:
        batch.save_users({"u1": b"one", "u2": b"two"})
    with store.write() as batch:
        batch.save_users({"u1": b"uno", "u2": None})
    assert store.user_state("u1") == b"uno"
    assert store.user_state("u2") is None
    assert dict(store.iter_users()) == {"u1": b"uno"}


def test_meta_and_links_round_trip(store: Store) -> None:
    assert store.load_meta() is None
    with store.write() as batch:
        batch.save_meta(b"m1")
        batch.save_links({"a1": "u1", "a2": "u1"})
    with store.write() as batch:
        batch.save_meta(b"m2")
        batch.save_links({"a2": "u2"})
    assert store.load_meta() == b"m2"
    assert store.load_links() == {"a1": "u1", "a2": "u2"}
    assert store.links_to("u1") == ["a1"]


def test_a_fire_id_is_recorded_once(store: Store) -> None:
    with store.write() as batch:
        batch.add_fires([fire("f1", 10), fire("f2", 20, suppressed="guard")])
    with store.write() as batch:
        batch.add_fires([fire("f1", 10)])
    fires = store.fires()
    assert [f.fire_id for f in fires] == ["f2", "f1"]  # newest first
    assert fires[1].key == {"k": 1} and fires[1].events == ("m1", "m2")
    assert store.fire_counts() == {"t": (1, 1)}


def test_fire_queries_filter_by_trigger_user_and_time(store: Store) -> None:
    with store.write() as batch:
        batch.add_fires([fire("f1", 10), fire("f2", 20, trigger="x"), fire("f3", 30, user="u2")])
    assert [f.fire_id for f in store.fires(trigger="x")] == ["f2"]
    assert [f.fire_id for f in store.fires(user="u2")] == ["f3"]
    assert [f.fire_id for f in store.fires(since=20)] == ["f3", "f2"]
    assert [f.fire_id for f in store.fires(limit=1)] == ["f3"]


def test_event_queries_find_a_user_by_either_id(store: Store) -> None:
    with store.write() as batch:
        batch.append_events([row("a", 1), row("b", 2, user=None, anon="x1"), row("c", 3, user="u2")])
    assert [r.message_id for r in store.events(users=["u1", "x1"])] == ["b", "a"]
    assert [r.message_id for r in store.events(limit=2)] == ["c", "b"]


def test_migrations_are_recorded_and_applied_once(location: StoreLocation) -> None:
    first = location.open()
    with first.store.write() as batch:
        batch.append_events([row("a", 1)])
    first.close()
    again = location.open().store
    again.open()  # opening an opened store is harmless: nothing is applied twice
    versions = {"sqlite": SQLITE_MIGRATIONS, "postgres": POSTGRES_MIGRATIONS}[location.kind]
    assert again.migrations() == [(version, name) for version, name, _ in versions]
    assert [r.message_id for r in again.iter_log()] == ["a"]


def test_commits_leave_checkpoints_to_checkpoint(store: Store) -> None:
    """A checkpoint inside a commit would stall every request waiting on that commit."""
    with store.write() as batch:
        batch.append_events([row(f"m{i}", i) for i in range(500)])
    store.checkpoint()
    with store.write() as batch:
        batch.append_events([row("late", 1000)])
    assert [r.message_id for r in store.iter_log()][-1] == "late"
    if isinstance(store, SqliteStore):
        assert store._writer is not None
        assert store._writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)


def test_each_log_row_keeps_the_watermark_it_was_decided_at(store: Store) -> None:
    with store.write() as batch:
        batch.append_events([LogRow(0, "a", "u1", None, 10, 15, "accepted", b"{}", 7), row("b", 11)])
    assert [r.watermark for r in store.iter_log()] == [7, None]


def test_a_trial_write_is_rolled_back(store: Store) -> None:
    with store.write(commit=False) as batch:
        batch.append_events([row("a", 1)])
    assert list(store.iter_log()) == []


def test_quarantine_marks_only_the_latest_accepted_row_of_a_reused_message_id(store: Store) -> None:
    """An older row of the same id (reused after the dedup window) was applied long ago and stays."""
    with store.write() as batch:
        batch.append_events([row("a", 1), row("a", 9_000), row("b", 9_001)])
    kept = QuarantineRow(0, "a", "u1", None, 9_000, 9_005, 9_010, "RuntimeError: bug", b"{}")
    with store.write() as batch:
        batch.quarantine([kept], logged=["a"])
    assert [r.decision for r in store.iter_log()] == ["accepted", "quarantined", "accepted"]


def test_ids_and_text_with_nul_and_backslashes_round_trip(store: Store) -> None:
    """A userId of "a\\u0000b" is valid JSON; PostgreSQL's text cannot hold NUL, its adapter escapes it."""
    odd = ["a\x00b", "\x00", "back\\slash\\0", "\ue000marked", "\ue000a\x00"]
    with store.write() as batch:
        batch.append_events([row(f"m{i}", i, user=uid, anon=uid) for i, uid in enumerate(odd)])
        batch.save_users({uid: uid.encode() for uid in odd})
        batch.save_links(dict.fromkeys(odd[1:], odd[0]))
        batch.add_fires([fire(f"f{i}\x00", i, user=uid, trigger=uid) for i, uid in enumerate(odd)])
    assert [(r.user_id, r.anonymous_id) for r in store.iter_log()] == [(uid, uid) for uid in odd]
    assert dict(store.iter_users()) == {uid: uid.encode() for uid in odd}
    assert all(store.user_state(uid) == uid.encode() for uid in odd)
    assert sorted(store.links_to(odd[0])) == sorted(odd[1:])
    assert [r.message_id for r in store.events(users=[odd[1]])] == ["m1"]
    assert {f.user_id for f in store.fires(limit=10)} == set(odd)
    assert [f.fire_id for f in store.fires(user=odd[2])] == ["f2\x00"]
    assert store.fire("f4\x00") is not None and set(store.fire_counts()) == set(odd)


def test_long_reads_stream_every_row(store: Store) -> None:
    """Recovery reads the whole log and every user state; an adapter may fetch them in chunks."""
    with store.write() as batch:
        batch.append_events([row(f"m{i}", i) for i in range(5_000)])
        batch.save_users({f"u{i}": b"s" for i in range(4_100)})
    assert [r.message_id for r in store.iter_log()] == [f"m{i}" for i in range(5_000)]
    assert sum(1 for _ in store.iter_users()) == 4_100
    assert [r.message_id for r in store.accepted_after(4_997)] == ["m4998", "m4999"]


def test_quarantine_keeps_the_event_and_its_reason_and_marks_its_log_row(store: Store) -> None:
    with store.write() as batch:
        batch.append_events([row("a", 1), row("b", 2)])
    kept = QuarantineRow(0, "a", "u1", None, 1, 6, 9, "OverflowError: too big", b'{"m":"a"}')
    with store.write() as batch:
        batch.quarantine([kept], logged=["a"])
    assert [(r.message_id, r.decision) for r in store.iter_log()] == [("a", "quarantined"), ("b", "accepted")]
    assert [mid for mid, _ in store.accepted_ids_since(0)] == ["a", "b"]  # still a duplicate if sent again
    [entry] = store.quarantined()
    assert (entry.message_id, entry.reason, entry.body, entry.retried_at) == ("a", kept.reason, kept.body, None)
    assert store.quarantine_counts() == (1, 1)
    with store.write() as batch:
        batch.mark_retried(entry.id, 20, "late")
    assert store.quarantine_entry(entry.id) == QuarantineRow(
        entry.id, "a", "u1", None, 1, 6, 9, kept.reason, kept.body, 20, "late"
    )
    assert store.quarantined(pending_only=True) == [] and store.quarantine_counts() == (1, 0)


def test_the_sqlite_data_folder_and_database_are_for_the_owner_only(tmp_path: Path) -> None:
    """The event log holds personal data."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    store = SqliteStore(data)
    store.open()
    with store.write() as batch:
        batch.append_events([row("a", 1)])
    modes = {path.name: path.stat().st_mode & 0o777 for path in [data, *data.iterdir()]}
    store.close()
    assert modes.pop("data") == 0o700
    assert modes and set(modes.values()) == {0o600}, modes


@pytest.mark.parametrize(
    ("dsn", "schema", "message"),
    [
        ("postgresql://h/db?port=x=y", "tripwire", "postgres: not a PostgreSQL connection string"),
        ("postgresql://localhost/db", "Bad-Name", "schema: 'Bad-Name' is not a plain schema name"),
        ("postgresql://localhost/db", "1x", "schema: '1x' is not a plain schema name"),
    ],
)
def test_a_bad_postgres_location_is_named(dsn: str, schema: str, message: str) -> None:
    with pytest.raises(PostgresLocationError, match=re.escape(message)):
        open_stores(dsn, schema=schema)


def test_an_unreachable_postgres_is_an_error_naming_it_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(PostgresUnavailableError) as caught:
        open_stores(f"postgresql://me:s3cret@127.0.0.1:{port}/db")
    assert f"postgres: cannot connect to me@127.0.0.1:{port}/db: " in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_events_by_id_are_the_accepted_rows_in_arrival_order(store: Store) -> None:
    with store.write() as batch:
        batch.append_events([row("b", 5), row("a", 1), row("a", 2, "duplicate"), row("c", 3, "late"), row("d", 4)])
    assert [(r.message_id, r.ts) for r in store.events_by_id(["a", "b", "c", "x"])] == [("b", 5), ("a", 1)]
    assert store.events_by_id([]) == []


def test_fires_at_the_same_time_come_newest_emitted_first(store: Store) -> None:
    with store.write() as batch:
        batch.add_fires([fire("f1", 10), fire("f2", 10)])
    with store.write() as batch:
        batch.add_fires([fire("f0", 10), fire("f9", 5)])
    assert [f.fire_id for f in store.fires()] == ["f0", "f2", "f1", "f9"]
    assert store.fire("nope") is None and store.quarantine_entry(404) is None


def test_a_quarantine_entry_may_be_kept_as_retried_already(store: Store) -> None:
    """A user's timers set aside are kept as an entry that cannot be sent again: retried at once, not_retryable."""
    timers = QuarantineRow(0, "timers-u1", "u1", None, 5, 6, 9, "a timer's fire cannot be written", b"[]", 9,
                           "not_retryable")  # fmt: skip
    waiting = QuarantineRow(0, "a", "u1", None, 1, 6, 9, "RuntimeError: bug", b"{}")
    with store.write() as batch:
        batch.quarantine([timers, waiting], logged=[])
    kept = store.quarantined()
    assert [(e.message_id, e.retried_at, e.retry_decision) for e in kept] == [
        ("a", None, None), ("timers-u1", 9, "not_retryable"),
    ]  # fmt: skip
    assert store.quarantine_entry(kept[1].id) == dataclasses.replace(timers, id=kept[1].id)
    assert [e.message_id for e in store.quarantined(pending_only=True)] == ["a"]
    assert store.quarantine_counts() == (2, 1)
