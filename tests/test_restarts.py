"""PostgreSQL, then the broker, restarted under load: the workers and the ingest node wait, retry and resume.

The module runs its own PostgreSQL and Kafka (`scripts/services` with a state folder and
ports of the module's own), so stopping them disturbs no other test. Events go through an
ingest node (`tripwire serve --cluster`) from a client that sends a batch again after a
503 or a broken connection, with the same messageIds and timestamps, as Segment's SDKs
do. At the end every batch acknowledged with a 200 is in the logs once and not a
duplicate, the workers never exited, and the fires are those of a replay of each
partition's log, each recorded once.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cluster_kit import (
    PARTITIONS,
    Settled,
    WorkerProcess,
    cluster_fires,
    holders,
    logs,
    replay_log,
    seeded,
    wait,
    write_rules,
)  # fmt: skip
from kafka_kit import fresh_topic
from serverproc import WRITE_KEY, ServerProcess, free_port
from tripwire.rules import load_rules
from tripwire.timestamps import format_ms

SERVICES = Path(__file__).resolve().parent.parent / "scripts" / "services"


class Services:
    """A PostgreSQL and a Kafka broker of this module's own, started and stopped by `scripts/services`."""

    def __init__(self, state: Path) -> None:
        self.env = {
            **os.environ,
            "TRIPWIRE_SERVICES_STATE": str(state),
            "TRIPWIRE_SERVICES_POSTGRES_PORT": str(free_port()),
            "TRIPWIRE_SERVICES_KAFKA_PORT": str(free_port()),
            "TRIPWIRE_SERVICES_KAFKA_CONTROLLER_PORT": str(free_port()),
        }
        self.addresses: dict[str, str] = {}

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [str(SERVICES), *args], check=False, env=self.env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/services {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def start(self) -> None:
        for line in self.run("start").splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            self.addresses[name] = value

    def stop(self, which: str) -> None:
        self.run("stop", which)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    own = Services(tmp_path_factory.mktemp("services") / "state")
    try:
        own.start()
    except RuntimeError as exc:  # the shared services of the suite are started the same way
        if os.environ.get("CI") == "true":
            pytest.fail(f"could not start the test's own services: {exc}", pytrace=False)
        pytest.skip(f"could not start the test's own services: {exc}")
    try:
        yield own
    finally:
        own.run("reset")


@pytest.fixture
def own(services: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    """The module's services, which the cluster helpers now read their addresses from."""
    for name, value in services.addresses.items():
        monkeypatch.setenv(name, value)
    return services


class HttpLoad:
    """Batches of events posted to an ingest node; a batch that gets no 200 is sent again,
    the same, until it does. `acknowledged` holds the messageIds of each 200 and when."""

    def __init__(self, node: ServerProcess, rng: random.Random, users: int = 120, batch: int = 8) -> None:
        self.node, self.rng, self.users, self.batch = node, rng, users, batch
        self.acknowledged: list[tuple[float, list[str]]] = []
        self.refused = 0  # answers that were not 200, and connections that failed
        self.slowest = 0.0  # seconds from the first send of a batch to its 200
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HttpLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the client did not stop"

    def ids(self, before: float = float("inf")) -> list[str]:
        return [m for at, batch in self.acknowledged if at < before for m in batch]

    def _events(self) -> list[dict[str, object]]:
        events = []
        for _ in range(self.batch):
            now = int(time.time() * 1000)
            events.append({"type": "track", "event": self.rng.choice(["add", "buy", "song", "song", "view"]),
                           "userId": f"u{self.rng.randrange(self.users)}", "timestamp": format_ms(now),
                           "messageId": uuid.uuid4().hex})  # fmt: skip
        return events

    def _run(self) -> None:
        with httpx.Client(base_url=self.node.base, auth=(WRITE_KEY, ""), timeout=30) as client:
            while not self._stopping.is_set():
                events = self._events()
                first = time.monotonic()
                while not self._stopping.is_set():
                    try:
                        reply = client.post("/v1/batch", json={"batch": events})
                    except httpx.TransportError:
                        reply = None
                    if reply is not None and reply.status_code == 200:
                        self.acknowledged.append((time.monotonic(), [str(e["messageId"]) for e in events]))
                        self.slowest = max(self.slowest, time.monotonic() - first)
                        break
                    self.refused += 1
                    time.sleep(0.2)
                time.sleep(0.05)


def assert_acknowledged_once(rules: Path, schema: str, load: HttpLoad, before_outage: float) -> int:
    """Every acknowledged event logged once (and no more but as a duplicate), those of before
    the outage accepted, the fires recorded once each and those of a replay of the logs."""
    logged = logs(schema)
    seen: dict[str, str] = {}
    for partition, rows in logged.items():
        for message_id, decision in rows:
            if decision == "duplicate":
                continue
            assert message_id not in seen, f"{message_id} decided twice (partition {partition})"
            seen[message_id] = decision
    missing = [m for m in load.ids() if m not in seen]
    assert not missing, f"{len(missing)} acknowledged events not in any log, e.g. {missing[:5]}"
    early = [(m, seen[m]) for m in load.ids(before=before_outage) if seen[m] != "accepted"]
    assert not early, f"events acknowledged before the outage were not accepted: {early[:5]}"
    fires = cluster_fires(schema)
    assert len({f[0] for f in fires}) == len(fires), "a fire_id recorded twice"
    loaded = load_rules(rules)
    replayed = sorted(f for p in range(PARTITIONS) for f in replay_log(loaded, schema, p))
    assert fires == replayed, "the fires differ from a replay of the partitions' logs"
    return len(fires)


def run_outage(own: Services, which: str, tmp_path: Path) -> None:
    rng = seeded()
    rules = write_rules(tmp_path)
    schema = f"restart_{uuid.uuid4().hex[:12]}"
    with fresh_topic(PARTITIONS) as topic:
        env = {"TRIPWIRE_TOPIC": topic, "TRIPWIRE_SCHEMA": schema}
        node = ServerProcess(rules, tmp_path / "node", env=env, args=("--cluster",), log_level="info")
        workers = [WorkerProcess(rules, topic, schema, tmp_path, n) for n in range(2)]
        try:
            node.start()
            with HttpLoad(node, rng) as load:
                wait(lambda: len(set(holders(schema).values())) == 2, "two workers sharing the topic", 40, workers)
                time.sleep(rng.uniform(0.5, 2.0))
                before = time.monotonic()
                own.stop(which)
                time.sleep(rng.uniform(3.0, 6.0))  # the client goes on sending
                own.start()
                wait(lambda: len(load.acknowledged) > 0 and load.acknowledged[-1][0] > time.monotonic() - 1,
                     "the ingest node to take events again", 60, workers)  # fmt: skip
                time.sleep(rng.uniform(1.0, 3.0))
            assert node.proc is not None and node.proc.poll() is None, node.log_tail()
            # the client felt the outage: batches refused, or held until the service was back
            assert load.refused > 0 or load.slowest > 2.0, "the outage was not one"
            wait(Settled(schema, topic), "every record decided and every timer final", 90, workers)
            assert [w.stop() for w in workers] == [0, 0], [w.output() for w in workers]
            assert node.stop() == 0, node.log_tail()
            fires = assert_acknowledged_once(rules, schema, load, before)
            said = "".join(w.output() for w in workers)
            if which == "postgres":  # the workers waited for it, and went on
                assert "partition paused until it answers" in said and "partition resumed" in said, said[-3000:]
        finally:
            node.kill()
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait(10)
    print(f"{len(load.ids())} events acknowledged, {load.refused} refusals, slowest {load.slowest:.1f}s, {fires} fires")


def test_postgres_restarted_under_load_workers_and_ingest_wait_and_resume(own: Services, tmp_path: Path) -> None:
    run_outage(own, "postgres", tmp_path)


def test_the_broker_restarted_under_load_workers_and_ingest_wait_and_resume(own: Services, tmp_path: Path) -> None:
    run_outage(own, "kafka", tmp_path)
