"""The store contract of a Kafka worker: positions, fencing, and a partition's own log.

Positions and fencing run on SQLite and on PostgreSQL (the `location` fixture); a store
scoped to a partition is PostgreSQL's alone (SQLite keeps the single node's log and says so).
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import StoreLocation
from service_kit import track
from tripwire.engine import Engine
from tripwire.errors import FencedError
from tripwire.pipeline import Pipeline
from tripwire.rules import parse_rules
from tripwire.store import (
    Batch,
    FireRow,
    LogRow,
    NewDelivery,
    QuarantineRow,
    Store,
    StoreLocationError,
    Stores,
    open_stores,
)
from tripwire.store.postgres_db import MIGRATIONS

T0 = 1_772_323_200_000


def row(mid: str, ts: int, user: str | None = "u1", anon: str | None = None) -> LogRow:
    return LogRow(0, mid, user, anon, ts, ts + 5, "accepted", b'{"m":"%s"}' % mid.encode(), ts - 1)


def fire(fid: str, at: int, user: str = "u1") -> FireRow:
    return FireRow(fid, "t", user, None, at, ("m1",), None, None, at + 1)


def delivery(fid: str, user: str = "u1") -> NewDelivery:
    return NewDelivery(fid, "hook", "webhook", "t", user, 100)


@pytest.fixture
def partition(location: StoreLocation) -> int | None:
    """The log these tests write: a Kafka partition's on PostgreSQL, the single node's on SQLite."""
    return None if location.kind == "sqlite" else 3


def everything(stores: Stores) -> tuple[Any, ...]:
    """What a write can change, as one value to compare before and after."""
    s = stores.store
    return (
        list(s.iter_log()),
        dict(s.iter_users()),
        s.load_links(),
        s.load_meta(),
        s.fires(limit=1000),
        [(d.fire_id, d.action) for d in stores.outbox.find(limit=1000)],
        s.quarantined(limit=1000),
        s.load_position("topic:3"),
    )


def write_all(store: Store, tag: str, epoch: int | None = None, *, check_first: bool = True) -> None:
    """One worker's batch: every kind of write, with the ownership check first (as the pipeline does) or last."""
    with store.write() as batch:
        if epoch is not None and check_first:
            batch.check_owner(epoch)
        batch.append_events([row(f"{tag}-m", 10)])
        batch.save_users({f"{tag}-u": b"state"})
        batch.save_links({f"{tag}-anon": f"{tag}-u"})
        batch.save_meta(tag.encode())
        batch.add_fires([fire(f"{tag}-f", 10)])
        batch.add_deliveries([delivery(f"{tag}-f")])
        batch.quarantine([QuarantineRow(0, f"{tag}-q", "u1", None, 1, 2, 3, "bad", b"{}")], logged=[])
        batch.save_position("topic:3", 100 + len(tag))
        if epoch is not None and not check_first:
            batch.check_owner(epoch)


# -- positions -------------------------------------------------------------------------------


def test_a_position_commits_with_its_batch_and_only_then(location: StoreLocation, partition: int | None) -> None:
    store = location.open(partition).store
    assert store.load_position("topic:3") is None
    with store.write() as batch:
        batch.append_events([row("a", 1)])
        batch.save_position("topic:3", 42)
    with store.write() as batch:
        batch.save_position("topic:3", 43)
        batch.save_position("other:0", 7)
    with pytest.raises(RuntimeError), store.write() as batch:
        batch.save_position("topic:3", 99)
        raise RuntimeError("crash before commit")
    with store.write(commit=False) as batch:
        batch.save_position("topic:3", 98)
    assert (store.load_position("topic:3"), store.load_position("other:0")) == (43, 7)
    again = location.open(partition).store
    assert (again.load_position("topic:3"), again.load_position("topic:4")) == (43, None)


@pytest.mark.parametrize(
    ("source", "position", "message"),
    [
        ("", 1, "source: '' is not a source name"),
        (None, 1, "source: None is not a source name"),
        ("topic:3", -1, "position: -1 is not an offset"),
        ("topic:3", True, "position: True is not an offset"),
        ("topic:3", "5", "position: '5' is not an offset"),
    ],
)
def test_a_bad_position_is_named(stores: Stores, source: Any, position: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)), stores.store.write() as batch:
        batch.save_position(source, position)
    assert stores.store.load_position("topic:3") is None


def test_a_position_is_read_by_a_source_name(stores: Stores) -> None:
    with pytest.raises(ValueError, match=re.escape("source: '' is not a source name")):
        stores.store.load_position("")


# -- fencing ---------------------------------------------------------------------------------


def test_a_worker_whose_partition_was_claimed_since_commits_nothing(
    location: StoreLocation, partition: int | None
) -> None:
    a, b = location.open(partition), location.open(partition)
    with pytest.raises(FencedError), a.store.write() as batch:
        batch.check_owner(1)  # nobody claimed the log yet: no epoch is current
    epoch_a = a.store.claim_owner("worker-a")
    assert epoch_a == 1
    write_all(a.store, "a", epoch_a)
    before = everything(b)
    assert before[0] and before[4], "worker A's own write went through"
    epoch_b = b.store.claim_owner("worker-b")
    assert epoch_b == 2
    what = "the log" if partition is None else f"partition {partition}"
    fenced = re.escape(f"{what} is owned by another worker now; this one stops writing it")
    with pytest.raises(FencedError, match=fenced):
        write_all(a.store, "zombie", epoch_a)  # checked first, as the pipeline does
    with pytest.raises(FencedError, match=fenced):
        write_all(a.store, "zombie", epoch_a, check_first=False)  # every write made before the check
    with pytest.raises(FencedError, match=fenced), a.store.write() as batch:
        batch.append_events([row("swallowed", 20)])
        with contextlib.suppress(FencedError):  # a caller that ignores the error: the batch still refuses to commit
            batch.check_owner(epoch_a)
    assert everything(a) == everything(b) == before  # log, users, links, meta, fires, outbox, quarantine, position
    write_all(b.store, "b", epoch_b)
    assert everything(b) != before
    assert a.store.claim_owner("worker-a") == 3
    with pytest.raises(FencedError):
        write_all(b.store, "late", epoch_b)


def test_a_claim_waits_for_a_checked_write_to_commit(location: StoreLocation, partition: int | None) -> None:
    """A claim and a commit cannot interleave: the claim comes after the write, which then stands."""
    a, b = location.open(partition).store, location.open(partition).store
    epoch = a.claim_owner("worker-a")
    claimed: list[int] = []
    claim = threading.Thread(target=lambda: claimed.append(b.claim_owner("worker-b")))
    with a.write() as batch:
        batch.check_owner(epoch)
        claim.start()
        claim.join(timeout=0.5)
        assert claim.is_alive(), "the claim went through while a checked write was open"
        batch.append_events([row("kept", 1)])
    claim.join(timeout=30)
    assert claimed == [epoch + 1]
    assert [r.message_id for r in b.iter_log()] == ["kept"]
    with pytest.raises(FencedError), a.write() as batch:
        batch.check_owner(epoch)


def test_concurrent_claims_each_get_an_epoch_of_their_own(location: StoreLocation, partition: int | None) -> None:
    claimers = [location.open(partition).store for _ in range(3)]
    got: list[int] = []
    lock = threading.Lock()

    def claim(store: Store, name: str) -> None:
        for _ in range(15):
            epoch = store.claim_owner(name)
            with lock:
                got.append(epoch)

    threads = [threading.Thread(target=claim, args=(s, f"w{i}")) for i, s in enumerate(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == list(range(1, 46))


def test_a_zombie_workers_pipeline_step_commits_nothing(location: StoreLocation, partition: int | None) -> None:
    """Two workers of one partition drive the real pipeline; the one whose partition moved is fenced."""
    rules = parse_rules("settings: {allowed_lateness: 1s}\ntriggers:\n  big: {when: buy}\n")
    a, b = location.open(partition).store, location.open(partition).store

    def worker_step(pipeline: Pipeline, engine: Engine, epoch: int, mid: str, offset: int) -> None:
        def also(batch: Batch) -> None:
            batch.check_owner(epoch)
            batch.save_position("orders:3", offset)

        at = T0 + offset
        pipeline.step(engine, [[track("buy", "u1", mid, at)]], now=at, watermark=at + 1, also=also)

    first = Pipeline(a, rules)
    epoch_a = a.claim_owner("worker-a")
    zombie = first.recover()
    worker_step(first, zombie, epoch_a, "m1", 1)
    second = Pipeline(b, rules)
    epoch_b = b.claim_owner("worker-b")
    engine_b = second.recover()  # the state worker A committed
    worker_step(second, engine_b, epoch_b, "m2", 2)
    before = (list(b.iter_log()), dict(b.iter_users()), b.load_meta(), b.fires(), b.load_position("orders:3"))
    assert (len(before[3]), before[4]) == (2, 2)  # a fire for each of m1 and m2; the offset after m2
    with pytest.raises(FencedError):
        worker_step(first, zombie, epoch_a, "m3", 3)
    assert (list(b.iter_log()), dict(b.iter_users()), b.load_meta(), b.fires(), b.load_position("orders:3")) == before


@pytest.mark.parametrize(("call", "message"), [("claim", "owner: '' is not an owner's name"), ("check", "epoch: '1'")])
def test_a_bad_owner_or_epoch_is_named(stores: Stores, call: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        if call == "claim":
            stores.store.claim_owner("")
        else:
            with stores.store.write() as batch:
                batch.check_owner("1")  # type: ignore[arg-type]  # a caller's mistake, named


# -- fires and deliveries know the partition that wrote them --------------------------------

HOOKED = """
actions:
  hook: {type: webhook, url: "http://127.0.0.1:9/hooks", allow_private: true}
settings: {allowed_lateness: 1s}
triggers:
  big: {when: buy, actions: [hook]}
"""


def test_fires_and_deliveries_are_read_with_the_partition_that_wrote_them(
    location: StoreLocation, partition: int | None
) -> None:
    """The real pipeline writes through a partition's store; every read of a fire or a delivery names it."""
    stores = location.open(partition)
    pipeline = Pipeline(stores.store, parse_rules(HOOKED))
    engine = pipeline.recover()
    pipeline.step(engine, [[track("buy", "u1", "m1", T0)]], now=T0, watermark=T0 + 1)
    own = FireRow("own", "t", "u2", None, 11, (), None, None, 12, False, partition)  # names its own partition
    with stores.store.write() as batch:
        batch.add_fires([fire("by-hand", 10), own])
        batch.add_deliveries([delivery("by-hand", "u2")])
        batch.save_users({"u2": b"u2's state"})
    [fired] = stores.store.fires(trigger="big")
    assert [(f.fire_id, f.partition) for f in stores.store.fires()] == [
        (fired.fire_id, partition), ("own", partition), ("by-hand", partition),
    ]  # fmt: skip
    assert stores.store.fire(fired.fire_id) == fired and fired.partition == partition
    outbox = stores.outbox
    claimed = outbox.claim(now=T0, limit=10, lease_ms=1_000)
    assert [(d.fire_id, d.partition) for d in claimed] == [("by-hand", partition), (fired.fire_id, partition)]
    outbox.hold(claimed[0], T0 + 5, "quiet hours", T0)
    outbox.drop(claimed[1], "dead", "gave up", T0)
    assert {(d.status, d.partition) for d in outbox.find()} == {("pending", partition), ("dead", partition)}
    assert [d.partition for d in outbox.find(fire_id=fired.fire_id, status="dead")] == [partition]
    assert outbox.retry_dead(T0) == 1
    assert [d.partition for d in outbox.claim(now=T0 + 5, limit=10, lease_ms=1_000)] == [partition, partition]
    # Where the dispatcher renders a delivery from: the user's state and the events, in that partition's log.
    log = stores.partition(claimed[0].partition)
    assert log.user_state(claimed[0].user_id) == b"u2's state"
    assert [e.message_id for e in stores.partition(claimed[1].partition).events_by_id(list(fired.events))] == ["m1"]


def test_a_fire_naming_another_partition_is_refused(location: StoreLocation, partition: int | None) -> None:
    store = location.open(partition).store
    own = "None, the single-node log" if partition is None else str(partition)
    message = f"fires[1].partition: 7 is not the partition this store writes ({own}): leave it None"
    elsewhere = FireRow("f2", "t", "u1", None, 10, (), None, None, 11, False, 7)
    with pytest.raises(ValueError, match=re.escape(message)), store.write() as batch:
        batch.add_fires([fire("f1", 10), elsewhere])
    assert store.fires() == []
    with store.write() as batch:
        batch.add_fires([fire("f1", 10)])
    [kept] = store.fires()
    with store.write() as batch:
        batch.add_fires([kept])  # a fire read back names this store's partition: recorded again, ignored
    assert store.fires() == [kept]


# -- partitions ------------------------------------------------------------------------------


def test_sqlite_keeps_one_log_and_says_a_partition_needs_postgres(tmp_path: Path) -> None:
    message = "partition: 0 needs a PostgreSQL location (postgresql://...)"
    with pytest.raises(StoreLocationError, match=re.escape(message)):
        open_stores(tmp_path / "data", partition=0)
    stores = open_stores(tmp_path / "data")
    try:
        assert stores.partition(None) is stores.store and stores.store.partition is None
        with pytest.raises(StoreLocationError, match=re.escape("partition: 2 needs a PostgreSQL location")):
            stores.partition(2)
    finally:
        stores.close()


@pytest.mark.parametrize("bad", [-1, 2**31, True, "3", 1.0])
def test_a_bad_partition_is_named(tmp_path: Path, bad: Any) -> None:
    """Checked before anything is opened or connected to."""
    message = f"partition: {bad!r} is not a Kafka partition number (a whole number from 0 to 2147483647"
    for where in (tmp_path / "data", "postgresql://tripwire@127.0.0.1:1/none"):
        with pytest.raises(StoreLocationError, match=re.escape(message)):
            open_stores(where, partition=bad)
    assert not (tmp_path / "data").exists()


def test_each_partition_keeps_its_own_log_and_shares_fires_and_the_outbox(postgres_location: StoreLocation) -> None:
    whole = postgres_location.open()
    p0 = postgres_location.open(partition=0)
    p1 = whole.partition(1)  # the same pool as the single-node store
    assert (whole.store.partition, p0.store.partition, p1.partition) == (None, 0, 1)
    logs: dict[str, Store] = {"whole": whole.store, "p0": p0.store, "p1": p1}
    for name, store in logs.items():
        with store.write() as batch:
            batch.append_events([row(f"{name}-m", 10), row("same", 11, user="u1"), row(f"{name}-x", 12, anon="a1")])
            batch.save_users({"u1": name.encode(), f"{name}-u": b"s"})
            batch.save_links({"a1": f"{name}-target"})
            batch.save_meta(name.encode())
            batch.add_fires([fire(f"{name}-f", 10), fire("shared-f", 10)])
            batch.add_deliveries([delivery("shared-f"), delivery(f"{name}-f")])
            batch.quarantine([QuarantineRow(0, "same", "u1", None, 11, 16, 20, f"{name} bad", b"{}")], ["same"])
            batch.save_position("topic:0", len(name))
    entries = {name: store.quarantined()[0].id for name, store in logs.items()}
    with p1.write() as batch:
        batch.mark_retried(entries["p0"], 30, "late")  # another partition's entry: not this log's to mark
    for name, store in logs.items():
        others = [other for other in logs if other != name]
        assert [(r.message_id, r.decision) for r in store.iter_log()] == [
            (f"{name}-m", "accepted"), ("same", "quarantined"), (f"{name}-x", "accepted"),
        ]  # fmt: skip
        assert [r.message_id for r in store.accepted_after(10)] == [f"{name}-x"]
        assert [mid for mid, _ in store.accepted_ids_since(0)] == [f"{name}-m", "same", f"{name}-x"]
        assert [r.message_id for r in store.events(users=["u1", "a1"])] == [f"{name}-x", "same", f"{name}-m"]
        assert [r.message_id for r in store.events(limit=1)] == [f"{name}-x"]
        assert store.events_by_id([f"{o}-m" for o in others]) == []
        assert dict(store.iter_users()) == {"u1": name.encode(), f"{name}-u": b"s"}
        assert store.user_state("u1") == name.encode()
        assert store.load_links() == {"a1": f"{name}-target"} and store.links_to(f"{name}-target") == ["a1"]
        assert store.links_to(f"{others[0]}-target") == []
        assert store.load_meta() == name.encode()
        assert [(q.id, q.reason, q.retried_at) for q in store.quarantined()] == [(entries[name], f"{name} bad", None)]
        assert store.quarantine_counts() == (1, 1)
        assert all(store.quarantine_entry(entries[other]) is None for other in others)
        assert store.load_position("topic:0") == len(name)
        # Fires are shared: each is recorded once, whichever partition emitted it, and read from any.
        # Each keeps the partition that recorded it first (the single-node log wrote "shared-f" first).
        assert sorted((f.fire_id, f.partition) for f in store.fires()) == [
            ("p0-f", 0), ("p1-f", 1), ("shared-f", None), ("whole-f", None),
        ]  # fmt: skip
        assert store.fire_counts() == {"t": (4, 0)}
        assert [store.fire(f"{other}-f") for other in logs] == [
            fire("whole-f", 10), replace(fire("p0-f", 10), partition=0), replace(fire("p1-f", 10), partition=1),
        ]  # fmt: skip
    assert [(d.fire_id, d.action, d.partition) for d in whole.outbox.find()] == [
        ("p1-f", "hook", 1), ("p0-f", "hook", 0), ("whole-f", "hook", None), ("shared-f", "hook", None),
    ]  # fmt: skip
    assert p0.outbox.find() == whole.outbox.find()
    # A dispatcher reads a delivery's user state from the log that queued it.
    states = {d.fire_id: whole.partition(d.partition).user_state("u1") for d in whole.outbox.claim(100, 10, 1_000)}
    assert states == {"whole-f": b"whole", "p0-f": b"p0", "p1-f": b"p1", "shared-f": b"whole"}
    # Each partition has its own owner: a claim of one fences no other.
    assert [store.claim_owner(name) for name, store in logs.items()] == [1, 1, 1]
    assert p1.claim_owner("p1-again") == 2
    write_all(p0.store, "p0", 1)
    with pytest.raises(FencedError, match=r"^partition 1 is owned by another worker now"):
        write_all(p1, "p1", 1)


def test_a_schema_of_version_1_becomes_the_single_node_log(postgres_location: StoreLocation) -> None:
    """Migration 2 keeps every row, as the single-node log's; a write naming no partition fails from then on."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(str(postgres_location.where), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_location.schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(postgres_location.schema)))
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version, name, text = MIGRATIONS[0]
        for statement in text.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
        conn.execute(
            "INSERT INTO events (message_id, user_id, ts, received_at, decision, body) VALUES"
            " ('a', 'u1', 1, 2, 'accepted', 'x'), ('b', 'u1', 3, 4, 'late', 'y')"
        )
        conn.execute("INSERT INTO users VALUES ('u1', 'state')")
        conn.execute("INSERT INTO links VALUES ('a1', 'u1')")
        conn.execute("INSERT INTO meta VALUES ('engine', 'meta'), ('goals', %s)", (b'{"fires": 5, "events": 6}',))
        conn.execute(
            "INSERT INTO quarantine (message_id, ts, received_at, quarantined_at, reason, body)"
            " VALUES ('q', 1, 2, 3, 'bad', 'z')"
        )
        conn.execute(
            "INSERT INTO fires (fire_id, trigger, user_id, key, fire_time, events, emitted_at)"
            " VALUES ('f', 't', 'u1', 'null', 5, '[\"a\"]', 6)"
        )
        conn.execute(
            "INSERT INTO deliveries (fire_id, action, channel, trigger, user_id, status, next_at, created_at,"
            " updated_at) VALUES ('f', 'hook', 'webhook', 't', 'u1', 'pending', 6, 6, 6)"
        )
    stores = postgres_location.open()
    store = stores.store
    assert [v for v, _ in store.migrations()] == [1, 2, 3, 4]
    # Migration 3: the fires and deliveries there are the single-node log's.
    assert store.fire("f") == FireRow("f", "t", "u1", None, 5, ("a",), None, None, 6, False, None)
    assert [(d.fire_id, d.partition) for d in stores.outbox.claim(6, 10, 1_000)] == [("f", None)]
    assert [(r.message_id, r.decision) for r in store.iter_log()] == [("a", "accepted"), ("b", "late")]
    assert (store.user_state("u1"), store.load_links(), store.load_meta()) == (b"state", {"a1": "u1"}, b"meta")
    assert [q.message_id for q in store.quarantined()] == ["q"] and stores.goals.cursor() == (5, 6)
    other = stores.partition(0)
    assert (list(other.iter_log()), other.load_meta(), other.quarantined()) == ([], None, [])
    with psycopg.connect(str(postgres_location.where)) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(postgres_location.schema)))
        for insert in (
            "INSERT INTO users (uid, state) VALUES ('u2', 'x')",
            "INSERT INTO fires (fire_id, trigger, user_id, key, fire_time, events, emitted_at)"
            " VALUES ('g', 't', 'u1', 'null', 5, '[]', 6)",
            "INSERT INTO deliveries (fire_id, action, channel, trigger, user_id, status, next_at, created_at,"
            " updated_at) VALUES ('g', 'hook', 'webhook', 't', 'u1', 'pending', 6, 6, 6)",
        ):
            with pytest.raises(psycopg.errors.NotNullViolation, match="part"), conn.transaction():
                conn.execute(insert)
