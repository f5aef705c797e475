"""Crash test: SIGKILL the real server under load, again and again, and lose nothing.

SPEC §5: no acknowledged event is lost and no fire is emitted twice across crashes and
restarts, and replaying the event log gives the fires the live server gave.

Several senders post `/v1/batch` to a real `tripwire serve` (a subprocess) with
unique messageIds, some deliberate duplicates (SDK retries), anonymous visitors who
log in, and timestamps of now. The server is killed with SIGKILL at random moments
and restarted on the same data folder, 3 to 5 times, then stopped with SIGTERM.
A request that got a 200 was acknowledged; one cut off by the kill was not (its
events may or may not be in the log). Then:

(a) every acknowledged event is in the log, as often as it was acknowledged;
(b) no messageId is accepted twice (deduplication survives crashes) and no fire_id
    is recorded twice;
(c) the server's fires are exactly those of a replay of its log
    (`tripwire replay RULES DATA_DIR`), suppressed or not.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from serverproc import ServerProcess
from tripwire.replay import Replayer, replay_store
from tripwire.rules import load_rules
from tripwire.store import SqliteStore
from tripwire.timestamps import format_ms

# Short windows, so that windows open, fire and close many times within seconds, and
# many are open (or due while the server is down) at each kill.
RULES = """
settings:
  allowed_lateness: 200ms
  restart_grace: 1500ms    # SDKs resend what a crash cut off: it must not be late
triggers:
  abandon:                 # absence: a cart with no purchase within 500ms
    when: add_to_cart
    unless: purchase
    within: 500ms
  abandon_item:            # absence per key, deadline moved by every add
    key: properties.sku
    when: add_to_cart
    unless: purchase
    within: 400ms
    restart: true
  burst:                   # count
    when: song_played
    count: 3
    within: 2s
  big_order:               # on event, with a cooldown (suppressed fires) and a guard
    when: {event: purchase, where: {properties.total: {gte: 500}}}
    cooldown: 1s
    if:
      - {trait: plan, ne: banned}
  idle:                    # inactivity
    inactive: 700ms
"""

SENDERS = 4
USERS = 24
KILLS = (3, 5)
DUPLICATE_RATE = 0.04


@dataclass
class Sent:
    """What one sender knows: the events of its acknowledged requests, and of the others."""

    acked: list[dict[str, Any]] = field(default_factory=list)
    unacked: int = 0
    failed_requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    history: list[dict[str, Any]] = field(default_factory=list)
    odd: list[str] = field(default_factory=list)  # 200 answers that are not a plain success
    resent: set[str] = field(default_factory=set)  # messageIds sent again after a failed request


def _event(rng: random.Random, sender: int, n: int, now: int) -> dict[str, Any]:
    user = rng.randrange(USERS)
    mid = f"s{sender}-{n}"
    kind = rng.random()
    who: dict[str, Any] = {"userId": f"u{user}"}
    if kind < 0.05:
        # a visitor logs in: links the anonymous id, merging its state into the user
        return {"type": "identify", "userId": f"u{user}", "anonymousId": f"a{user}", "messageId": mid,
                "timestamp": format_ms(now), "traits": {"plan": rng.choice(["free", "pro", "banned"])}}  # fmt: skip
    if kind < 0.15:
        who = {"anonymousId": f"a{user}"}
    name = rng.choices(["add_to_cart", "purchase", "song_played", "page"], weights=[4, 2, 4, 1])[0]
    if name == "page":
        return {"type": "page", "name": "Home", **who, "messageId": mid, "timestamp": format_ms(now)}
    properties: dict[str, Any] = {"sku": f"k{rng.randrange(3)}"}
    if name == "purchase":
        properties["total"] = rng.choice([20, 120, 499, 500, 800])
        if rng.random() < 0.5:
            del properties["sku"]  # a full checkout closes every item window
    return {"type": "track", "event": name, **who, "messageId": mid, "timestamp": format_ms(now),
            "properties": properties}  # fmt: skip


def _sender(server: ServerProcess, index: int, stop: threading.Event, sent: Sent, seed: int) -> None:
    rng = random.Random(seed * 100 + index)
    n = 0
    # Like an SDK, a sender keeps a batch that was not acknowledged and sends it again, with
    # the events' own timestamps, until it is; and only then makes new events.
    batch: list[dict[str, Any]] = []
    with httpx.Client(timeout=httpx.Timeout(10.0, connect=1.0), auth=server.write_auth) as client:
        while not stop.is_set():
            now = int(time.time() * 1000)
            if not batch:
                for _ in range(rng.randint(1, 25)):
                    if sent.history and rng.random() < DUPLICATE_RATE:
                        batch.append(rng.choice(sent.history))  # a retry: same messageId, same payload
                    else:
                        n += 1
                        batch.append(_event(rng, index, n, now))
            try:
                response = client.post(server.url("/v1/batch"), json={"batch": batch})
            except httpx.HTTPError:
                # cut off by a kill, or refused while the server restarts: not acknowledged
                sent.failed_requests += 1
                sent.unacked += len(batch)
                sent.resent.update(event["messageId"] for event in batch)
                time.sleep(0.02)
                continue
            sent.statuses[response.status_code] += 1
            if response.status_code == 200:
                sent.acked.extend(batch)
                if response.json() != {"success": True}:  # some events refused as bad: none should be
                    sent.odd.append(response.text)
            else:
                sent.unacked += len(batch)
                sent.resent.update(event["messageId"] for event in batch)
                time.sleep(0.02)
                continue
            sent.history.extend(batch[-3:])
            del sent.history[:-200]
            batch = []
            time.sleep(rng.uniform(0.0, 0.03))


def _server_fires(data: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(data / "tripwire.db") as conn:
        rows = conn.execute("SELECT fire_id, suppressed FROM fires").fetchall()
    conn.close()
    return [(fire_id, suppressed) for fire_id, suppressed in rows]


def _replayed_fires(rules: Path, data: Path) -> list[tuple[str, str | None]]:
    fires: list[tuple[str, str | None]] = []
    replayer = Replayer(load_rules(rules), lambda fire: fires.append((fire.fire_id, fire.suppressed)))
    replay_store(replayer, SqliteStore(data), None)
    return fires


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_event_and_repeats_no_fire(tmp_path: Path) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    data = tmp_path / "data"
    server = ServerProcess(rules, data)
    stop = threading.Event()
    sent = [Sent() for _ in range(SENDERS)]
    senders = [
        threading.Thread(target=_sender, args=(server, i, stop, sent[i], seed), name=f"sender-{i}", daemon=True)
        for i in range(SENDERS)
    ]
    kills = rng.randint(*KILLS)
    note = f"seed {seed}, {kills} kills"
    try:
        server.start()
        for thread in senders:
            thread.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 2.0))
            server.kill()
            time.sleep(rng.uniform(0.0, 0.3))  # down for a while: windows fall due meanwhile
            server.start()
        time.sleep(1.5 + rng.uniform(0.5, 1.5))  # past the restart grace, so timers fire again
    finally:
        stop.set()
        for thread in senders:
            thread.join(timeout=15)
        code = server.stop() if server.running() else None
    assert not any(thread.is_alive() for thread in senders), note
    assert code == 0, f"{note}: exit code {code} after SIGTERM\n{server.log_tail()}"

    acked = [event for s in sent for event in s.acked]
    statuses = sum((s.statuses for s in sent), Counter[int]())
    assert set(statuses) <= {200, 429, 503}, f"{note}: unexpected answers {statuses}\n{server.log_tail()}"
    odd = [text for s in sent for text in s.odd]
    assert not odd, f"{note}: {len(odd)} answers named bad events, e.g. {odd[:2]}"
    assert len(acked) > 1_000, f"{note}: too little traffic to mean anything: {len(acked)} events acknowledged"

    # (a) every acknowledged event is in the log, as often as it was acknowledged
    store = SqliteStore(data)
    log = list(store.iter_log())
    logged = Counter(row.message_id for row in log)
    missing = {mid: n for mid, n in Counter(e["messageId"] for e in acked).items() if logged[mid] < n}
    assert not missing, f"{note}: {len(missing)} acknowledged events are not in the log, e.g. {list(missing)[:5]}"
    bodies = {row.message_id: msgspec.json.decode(row.body) for row in log}
    for event in acked:
        body = bodies[event["messageId"]]
        assert (body.get("event"), body.get("userId"), body.get("anonymousId")) == (
            event.get("event"), event.get("userId"), event.get("anonymousId"),
        ), f"{note}: the log holds another event under {event['messageId']}"  # fmt: skip

    # (a') events sent again after a restart were applied, not late (the restart grace)
    first_decision: dict[str, str] = {}
    for row in log:
        first_decision.setdefault(row.message_id, row.decision)
    resent = {mid for s in sent for mid in s.resent} & {e["messageId"] for e in acked}
    late = sorted(mid for mid in resent if first_decision.get(mid) == "late")
    assert resent, f"{note}: no event was sent again after a failed request"
    assert not late, f"{note}: {len(late)} of {len(resent)} events sent again after a restart were late: {late[:5]}"

    # (b) deduplication survives the crashes, and no fire is recorded twice
    accepted = Counter(row.message_id for row in log if row.decision == "accepted")
    twice = [mid for mid, n in accepted.items() if n > 1]
    assert not twice, f"{note}: messageIds accepted twice: {twice[:5]}"
    decisions = Counter(row.decision for row in log)
    assert decisions["duplicate"] > 0, f"{note}: no duplicate was exercised: {decisions}"
    server_fires = _server_fires(data)
    ids = Counter(fire_id for fire_id, _ in server_fires)
    assert all(n == 1 for n in ids.values()), f"{note}: fire_ids recorded twice"
    triggers = Counter(row.trigger for row in store.fires(limit=10**9))
    assert {"abandon", "abandon_item", "burst", "big_order", "idle"} <= set(triggers), f"{note}: {triggers}"

    print(
        f"\n{note}: {len(acked)} events acknowledged, {sum(s.unacked for s in sent)} not "
        f"({sum(s.failed_requests for s in sent)} requests cut off, {len(resent)} events sent again); "
        f"answers {dict(statuses)}; log {dict(decisions)}; "
        f"fires {dict(triggers)}, {sum(1 for _, why in server_fires if why)} suppressed"
    )

    # (c) the server gave exactly the fires a replay of its log gives
    replayed = _replayed_fires(rules, data)
    assert len(replayed) == len(set(replayed)), f"{note}: the replay repeats a fire"
    only_server = set(server_fires) - set(replayed)
    only_replay = set(replayed) - set(server_fires)
    assert not only_server and not only_replay, (
        f"{note}: {len(only_server)} fires only on the server, {len(only_replay)} only in the replay "
        f"(of {len(server_fires)}); e.g. {sorted(only_server)[:3]} / {sorted(only_replay)[:3]}"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_under_load_drains_commits_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    """`tripwire serve --help`: stops cleanly on SIGTERM or Ctrl-C; no acknowledged event is lost."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    data = tmp_path / "data"
    server = ServerProcess(rules, data)
    stop = threading.Event()
    sent = [Sent() for _ in range(2)]
    senders = [threading.Thread(target=_sender, args=(server, i, stop, sent[i], 1), daemon=True) for i in range(2)]
    server.start()
    try:
        for thread in senders:
            thread.start()
        time.sleep(1.0)
        assert server.proc is not None
        server.proc.send_signal(sig)
        server.proc.wait(timeout=20)
    finally:
        stop.set()
        for thread in senders:
            thread.join(timeout=15)
        code = server.stop()
    assert code == 0, f"exit code {code} after {sig.name}\n{server.log_tail()}"
    assert "Traceback" not in server.log_path.read_text(), server.log_tail()
    acked = Counter(e["messageId"] for s in sent for e in s.acked)
    logged = Counter(row.message_id for row in SqliteStore(data).iter_log())
    assert acked, "no request was acknowledged before the signal"
    assert all(logged[mid] >= n for mid, n in acked.items()), "an acknowledged event is not in the log"


STATE_RULES = """
settings:
  allowed_lateness: 100ms
  restart_grace: 0s        # what was due while down fires at once (resends are not the point here)
triggers:
  abandon: {when: add_to_cart, unless: purchase, within: 1s}
  burst: {when: song_played, count: 3, within: 1m}
  big_order:
    when: {event: purchase, where: {properties.total: {gte: 500}}}
    cooldown: 1m
    if: [{trait: plan, ne: banned}]
  idle: {inactive: 1s, of: [{type: page}]}
"""


def test_every_kind_of_state_survives_a_sigkill(tmp_path: Path) -> None:
    """Deterministic: traits, identity links, count lists, open windows, cooldowns and
    inactivity deadlines, applied and committed before a SIGKILL, all hold after it."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(STATE_RULES)
    data = tmp_path / "data"
    server = ServerProcess(rules, data)
    n = 0

    def send(client: httpx.Client, *events: dict[str, Any]) -> None:
        nonlocal n
        batch = []
        for event in events:
            n += 1
            batch.append({"type": "track", "messageId": f"m{n}", "timestamp": format_ms(int(time.time() * 1000)),
                          **event})  # fmt: skip
        response = client.post(server.url("/v1/batch"), json={"batch": batch}, auth=server.write_auth)
        assert response.status_code == 200, response.text

    server.start()
    try:
        with httpx.Client(timeout=10) as client:
            send(client, {"type": "identify", "userId": "k", "anonymousId": "ak", "traits": {"plan": "free"}})
            send(
                client,
                {"event": "song_played", "userId": "k"},
                {"event": "song_played", "anonymousId": "ak"},  # counts for k through the link
                {"event": "add_to_cart", "userId": "k"},  # a window that falls due while the server is down
                {"type": "page", "name": "Home", "userId": "k"},  # an inactivity deadline, too
                {"event": "purchase", "userId": "c", "properties": {"total": 800}},  # fires: c's cooldown starts
            )
            time.sleep(0.3)  # the watermark passes them all: applied and committed
            # applied alone, so that nothing else of k's is written with it; then a later
            # commit moves the saved watermark past it, so a restart does not apply it again
            send(client, {"type": "identify", "userId": "k", "traits": {"plan": "banned"}})
            time.sleep(0.3)
            send(client, {"event": "noop", "userId": "x"})
            time.sleep(0.1)
            server.kill()
            server.start()
            send(
                client,
                {"event": "song_played", "anonymousId": "ak"},  # the third: burst fires for k
                {"event": "purchase", "userId": "k", "properties": {"total": 800}},  # the guard holds k back
                {"event": "purchase", "userId": "c", "properties": {"total": 900}},  # within c's cooldown
            )
            time.sleep(0.4)
    finally:
        code = server.stop()
    assert code == 0, server.log_tail()
    fires = {(row.trigger, row.user_id, row.suppressed) for row in SqliteStore(data).fires(limit=1000)}
    assert fires == {
        ("big_order", "c", None),
        ("abandon", "k", None),
        ("idle", "k", None),
        ("burst", "k", None),
        ("big_order", "k", "guard"),
        ("big_order", "c", "cooldown"),
    }
    assert set(_server_fires(data)) == set(_replayed_fires(rules, data))
