"""Cluster benchmark: `tripwire worker` on a real Kafka broker and PostgreSQL.

    eval "$(scripts/services start)"
    python bench/cluster.py --events 200000 --users 20000 --partitions 4 --workers 1,2 [--repeat 3]

The shop stream (examples/shop/generate.py) is produced once to a new topic of
`--partitions` partitions, keyed by user, untimed. Then for each worker count, R times
each (medians reported), in a fresh PostgreSQL schema and consumer group:

  catch-up   K `tripwire worker` processes (the shop rules) decide the whole topic from
             its start; events/s from the first committed step to the last, and the
             PostgreSQL transactions and rows written per event (pg_stat_database)
  latency    with the workers caught up, events produced at `--rate` a second for
             `--seconds`, each firing an on-event trigger; the time from a record's
             produce timestamp to its fire's commit (the fire's emitted_at), p50 and p99.
             A fire waits for the watermark to pass its event (allowed_lateness, 200 ms
             here), which is part of the figure.

Client, broker, database and workers share the machine: read the figures as ratios.
Results are printed and written to bench/out/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from psycopg import sql

from shop import load_generator  # bench/shop.py

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "cluster.json"
PING_RULES = """
  ping:
    description: fires at once, for the latency figure
    when: ping
"""


def rules_file(folder: Path) -> Path:
    """The shop rules with 200 ms of lateness and an on-event trigger for the latency phase."""
    text = (ROOT / "examples" / "shop" / "rules.yaml").read_text()
    text = text.replace("allowed_lateness: 5s", "allowed_lateness: 200ms").replace(
        "\ntriggers:\n", "\ntriggers:\n" + PING_RULES
    )
    path = folder / "rules.yaml"
    path.write_text(text)
    return path


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                         "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})  # fmt: skip
    started = time.perf_counter()
    for key, value in values:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0
    return time.perf_counter() - started


def positions(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            row = conn.execute(sql.SQL("SELECT COALESCE(SUM(position), 0) FROM {}.positions").format(
                sql.Identifier(schema))).fetchone()  # fmt: skip
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def db_counters(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def start_workers(count: int, rules: Path, topic: str, schema: str, group: str, env: dict[str, str]) -> list[Any]:
    command = [sys.executable, "-m", "tripwire", "worker", "--rules", str(rules), "--topic", topic,
               "--group", group, "--schema", schema, "--log-level", "warning"]  # fmt: skip
    return [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(count)]  # fmt: skip


def stop_workers(workers: list[Any]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(30)


def run(args: argparse.Namespace, workers: int, topic: str, total: int, rules: Path, r: int) -> dict[str, Any]:
    dsn = os.environ["TRIPWIRE_POSTGRES"]
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    group = f"bench-{uuid.uuid4().hex[:12]}"
    env = {**os.environ}
    commits0, rows0 = db_counters(dsn)
    procs = start_workers(workers, rules, topic, schema, group, env)
    try:
        first = None
        deadline = time.monotonic() + 1800
        while True:
            done = positions(dsn, schema)
            now = time.perf_counter()
            if done and first is None:
                first = (now, done)
            if done >= total:
                break
            assert all(p.poll() is None for p in procs), "a worker stopped"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.2)
        assert first is not None
        seconds = now - first[0]
        rate = (total - first[1]) / seconds if seconds > 0 else float("inf")
        time.sleep(1.5)  # PostgreSQL publishes its statistics about once a second
        commits1, rows1 = db_counters(dsn)
        latencies = latency_phase(args, topic, dsn, schema)
    finally:
        stop_workers(procs)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    result = {
        "events_per_s": rate,
        "db_commits_per_event": (commits1 - commits0) / total,
        "db_rows_per_event": (rows1 - rows0) / total,
        "latency_p50_ms": statistics.median(latencies),
        "latency_p99_ms": statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 100 else max(latencies),
    }
    print(f"  {workers} worker(s) run {r + 1}: {rate:,.0f} events/s, {result['db_commits_per_event']:.3f} commits "
          f"and {result['db_rows_per_event']:.2f} rows per event, latency p50 {result['latency_p50_ms']:.0f} ms "
          f"p99 {result['latency_p99_ms']:.0f} ms", flush=True)  # fmt: skip
    return result


def latency_phase(args: argparse.Namespace, topic: str, dsn: str, schema: str) -> list[float]:
    """Pings at a fixed rate, now-stamped; the produce-to-commit time of each one's fire."""
    producer = Producer({"bootstrap.servers": os.environ["TRIPWIRE_KAFKA"], "enable.idempotence": True,
                         "acks": "all", "linger.ms": 1})  # fmt: skip
    sent: dict[str, float] = {}
    count = int(args.rate * args.seconds)
    began = time.time()
    for i in range(count):
        due = began + i / args.rate
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        user, mid = f"ping-{i % 500}", f"ping-{uuid.uuid4().hex}"
        at = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
        event = {"type": "track", "event": "ping", "userId": user, "messageId": mid, "timestamp": stamp}
        producer.produce(topic, value=msgspec.json.encode(event), key=user.encode())
        sent[mid] = at * 1000
        producer.poll(0)
    producer.flush(30)
    deadline = time.monotonic() + 60
    found: dict[str, float] = {}
    while len(found) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.5)
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(sql.SQL("SELECT events, emitted_at FROM {}.fires WHERE trigger = 'ping'").format(
                sql.Identifier(schema))).fetchall()  # fmt: skip
        for events, emitted in rows:
            ids = json.loads(events) if isinstance(events, str) else events
            for mid in ids:
                if mid in sent:
                    found[mid] = float(emitted) - sent[mid]
    assert found, "no ping fired"
    return list(found.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rate", type=float, default=200.0, help="pings a second in the latency phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for variable in ("TRIPWIRE_KAFKA", "TRIPWIRE_POSTGRES"):
        if not os.environ.get(variable):
            raise SystemExit(f'{variable} is not set: run eval "$(scripts/services start)" first')
    bootstrap = os.environ["TRIPWIRE_KAFKA"]
    events = list(load_generator().generate(args.events, args.users, args.seed))
    values = [((e.get("userId") or e.get("anonymousId")).encode(), msgspec.json.encode(e)) for e in events]
    topic = f"bench-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])[topic].result(30)
    results: dict[str, Any] = {"events": len(values), "users": args.users, "partitions": args.partitions, "runs": {}}
    try:
        seconds = produce(bootstrap, topic, values)
        results["produce_events_per_s"] = len(values) / seconds
        print(f"produced {len(values):,} events to {args.partitions} partitions: {len(values) / seconds:,.0f}/s")
        with tempfile.TemporaryDirectory() as tmp:
            rules = rules_file(Path(tmp))
            for count in (int(n) for n in args.workers.split(",")):
                runs = [run(args, count, topic, len(values), rules, r) for r in range(args.repeat)]
                results["runs"][str(count)] = {
                    key: statistics.median(run_[key] for run_ in runs) for key in runs[0]
                } | {"all": runs}
    finally:
        admin.delete_topics([topic])[topic].result(30)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    for count, figures in results["runs"].items():
        print(f"{count} worker(s): median {figures['events_per_s']:,.0f} events/s, latency p50 "
              f"{figures['latency_p50_ms']:.0f} ms p99 {figures['latency_p99_ms']:.0f} ms, "
              f"{figures['db_rows_per_event']:.2f} rows per event")  # fmt: skip


if __name__ == "__main__":
    main()
