"""The outbox contract: deliveries claimed under a lease, finished, held, dropped, retried; on every adapter."""

from __future__ import annotations

import threading

import pytest

from conftest import StoreLocation
from tripwire.store import Attempt, DeliveryRow, NewDelivery, Outbox, Stores


@pytest.fixture
def outbox(stores: Stores) -> Outbox:
    return stores.outbox


def queue(stores: Stores, *rows: tuple[str, str, int], user: str = "u1", channel: str = "webhook") -> None:
    """Queue deliveries (fire_id, action, due time) as an engine batch does, with their fire."""
    with stores.store.write() as batch:
        batch.add_deliveries([NewDelivery(fid, action, channel, "t", user, at) for fid, action, at in rows])


def ok(n: int, at: int, latency: float = 12.5) -> Attempt:
    return Attempt(n, at, "ok", 200, latency, None)


def test_a_fire_action_is_queued_once(stores: Stores, outbox: Outbox) -> None:
    queue(stores, ("f1", "hook", 10), ("f1", "mail", 10))
    queue(stores, ("f1", "hook", 99))
    rows = outbox.find()
    assert [(r.fire_id, r.action, r.status, r.next_at, r.attempts) for r in rows] == [
        ("f1", "mail", "pending", 10, 0), ("f1", "hook", "pending", 10, 0),
    ]  # fmt: skip
    assert outbox.next_due() == 10


def test_claim_takes_due_rows_in_order_under_a_lease(stores: Stores, outbox: Outbox) -> None:
    queue(stores, ("f1", "a", 30), ("f2", "a", 10), ("f3", "a", 20), ("f4", "a", 1_000))
    claimed = outbox.claim(now=100, limit=2, lease_ms=50)
    assert [(r.fire_id, r.status) for r in claimed] == [("f2", "sending"), ("f3", "sending")]
    assert [r.fire_id for r in outbox.claim(now=100, limit=10, lease_ms=50)] == ["f1"]
    assert outbox.claim(now=149, limit=10, lease_ms=50) == []  # leased, and f4 not due
    # A sender that died: its lease runs out and the row is claimed again.
    assert [r.fire_id for r in outbox.claim(now=151, limit=10, lease_ms=50)] == ["f2", "f3", "f1"]
    assert outbox.next_due() == 1_000


def test_release_leases_makes_rows_being_sent_claimable(stores: Stores, outbox: Outbox) -> None:
    queue(stores, ("f1", "a", 10), ("f2", "a", 10))
    outbox.claim(now=10, limit=10, lease_ms=60_000)
    assert outbox.release_leases(now=20) == 2
    assert {r.status for r in outbox.find()} == {"pending"}
    assert len(outbox.claim(now=20, limit=10, lease_ms=1)) == 2


def test_finish_records_the_attempt_and_the_outcome(stores: Stores, outbox: Outbox) -> None:
    queue(stores, ("f1", "a", 10), user="u7", channel="email")
    [row] = outbox.claim(now=10, limit=1, lease_ms=1_000)
    outbox.finish(row, Attempt(1, 10, "retry", 503, 40.0, "HTTP 503"), status="pending", next_at=500, reason="HTTP 503")
    [again] = outbox.find(delivery_id=row.id)
    assert (again.status, again.attempts, again.next_at, again.reason, again.delivered_at) == (
        "pending", 1, 500, "HTTP 503", None,
    )  # fmt: skip
    assert outbox.claim(now=499, limit=1, lease_ms=1_000) == []
    [second] = outbox.claim(now=500, limit=1, lease_ms=1_000)
    outbox.finish(second, ok(2, 500, 25.0), status="delivered", next_at=500, reason=None)
    [done] = outbox.find(delivery_id=row.id)
    assert (done.status, done.attempts, done.delivered_at, done.updated_at) == ("delivered", 2, 525, 525)
    assert outbox.attempts(row.id) == [
        Attempt(1, 10, "retry", 503, 40.0, "HTTP 503"), Attempt(2, 500, "ok", 200, 25.0, None),
    ]  # fmt: skip
    assert outbox.delivered_since("u7", 525, None) == 1
    assert outbox.delivered_since("u7", 526, None) == 0
    assert outbox.delivered_since("u7", 0, "email") == 1 and outbox.delivered_since("u7", 0, "push") == 0
    assert outbox.next_due() is None


def test_hold_and_drop_say_why(stores: Stores, outbox: Outbox) -> None:
    queue(stores, ("f1", "a", 10), ("f2", "a", 10))
    first, second = outbox.claim(now=10, limit=2, lease_ms=1_000)
    outbox.hold(first, until=5_000, reason="quiet hours", now=11)
    outbox.drop(second, "dropped", "cap reached", now=12)
    by_fire = {r.fire_id: r for r in outbox.find()}
    assert (by_fire["f1"].status, by_fire["f1"].next_at, by_fire["f1"].reason) == ("pending", 5_000, "quiet hours")
    assert (by_fire["f2"].status, by_fire["f2"].reason, by_fire["f2"].updated_at) == ("dropped", "cap reached", 12)
    assert outbox.claim(now=4_999, limit=10, lease_ms=1) == []
    assert [r.fire_id for r in outbox.claim(now=5_000, limit=10, lease_ms=1)] == ["f1"]


def test_find_filters_and_retry_dead_puts_rows_back(stores: Stores, outbox: Outbox) -> None:
    queue(stores, ("f1", "a", 10), ("f2", "a", 10), ("f3", "a", 10))
    queue(stores, ("f4", "a", 10), user="u2")
    rows = {r.fire_id: r for r in outbox.claim(now=10, limit=10, lease_ms=1_000)}
    for fid in ("f1", "f2", "f4"):
        outbox.finish(rows[fid], Attempt(1, 10, "failed", 400, 5.0, "HTTP 400"), status="dead", next_at=10,
                      reason="HTTP 400")  # fmt: skip
    assert [r.fire_id for r in outbox.find(status="dead")] == ["f4", "f2", "f1"]  # newest first
    assert [r.fire_id for r in outbox.find(status="dead", user="u1", limit=1)] == ["f2"]
    assert [r.fire_id for r in outbox.find(fire_id="f3")] == ["f3"]
    assert outbox.retry_dead(now=50, ids=[rows["f1"].id, rows["f3"].id]) == 1  # f3 is not dead
    [again] = outbox.find(fire_id="f1")
    assert (again.status, again.attempts, again.next_at, again.reason) == ("pending", 0, 50, "retried by hand")
    assert outbox.retry_dead(now=60) == 2
    assert outbox.retry_dead(now=70, ids=[]) == 0
    assert outbox.find(status="dead") == []


def test_action_stats_count_attempts_and_deliveries(stores: Stores, outbox: Outbox) -> None:
    assert outbox.action_stats() == {}
    queue(stores, ("f1", "hook", 10), ("f2", "hook", 10), ("f3", "mail", 10))
    rows = {r.fire_id: r for r in outbox.claim(now=10, limit=10, lease_ms=1_000)}
    outbox.finish(rows["f1"], ok(1, 10, 10.0), status="delivered", next_at=10, reason=None)
    outbox.finish(rows["f2"], Attempt(1, 10, "retry", 500, 30.0, "HTTP 500"), status="pending", next_at=99,
                  reason="HTTP 500")  # fmt: skip
    stats = outbox.action_stats()
    assert stats["hook"] == {
        "deliveries": {"delivered": 1, "pending": 1}, "attempts": 2, "successes": 1, "failures": 1,
        "mean_latency_ms": 20.0, "max_latency_ms": 30.0,
    }  # fmt: skip
    assert stats["mail"] == {"deliveries": {"sending": 1}}


def test_two_dispatchers_claiming_at_once_never_take_the_same_row(location: StoreLocation, stores: Stores) -> None:
    """Several dispatchers share one outbox (SKIP LOCKED on PostgreSQL, the write lock on SQLite)."""
    queue(stores, *((f"f{i}", "a", 10) for i in range(200)))
    other = location.open().outbox  # a second set of adapters, as a second process would have
    taken: list[list[DeliveryRow]] = [[], []]

    def claim_all(outbox: Outbox, into: list[DeliveryRow]) -> None:
        while rows := outbox.claim(now=10, limit=7, lease_ms=60_000):
            into.extend(rows)

    pairs = zip([stores.outbox, other], taken, strict=True)
    threads = [threading.Thread(target=claim_all, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [r.id for rows in taken for r in rows]
    assert len(ids) == 200 and len(set(ids)) == 200
