"""The cluster end to end, as a user runs it: `tripwire serve --cluster` takes events from a
real Segment SDK and writes them to Kafka, `tripwire worker` decides them into PostgreSQL,
and the ingest node's admin API shows the fires and the user."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from zlib import crc32

import httpx

from conftest import postgres_dsn
from kafka_kit import broker, fresh_topic
from receiver import receiver
from serverproc import WRITE_KEY, ServerProcess

RULES = """
settings: {allowed_lateness: 1s}
triggers:
  welcome: {when: signup, actions: [hook]}
  cart: {when: add_to_cart, unless: purchase, within: 2s}
actions:
  hook: {type: webhook, url: "HOOK", allow_private: true}
"""


def test_events_from_a_segment_sdk_go_through_kafka_to_fires_the_ingest_node_shows(tmp_path: Path, schema: str) -> None:
    from segment.analytics.client import Client

    rules = tmp_path / "rules.yaml"
    with receiver() as hook, fresh_topic(2) as topic:
        rules.write_text(RULES.replace("HOOK", hook.url + "/hook"))
        env = {"TRIPWIRE_KAFKA": broker(), "TRIPWIRE_POSTGRES": postgres_dsn(), "TRIPWIRE_TOPIC": topic,
               "TRIPWIRE_SCHEMA": schema}  # fmt: skip
        node = ServerProcess(rules, tmp_path / "node", env=env, args=("--cluster",), log_level="info")
        worker = subprocess.Popen(
            [sys.executable, "-m", "tripwire", "worker", "--rules", str(rules), "--group", f"g-{topic}"],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            node.start()
            client = Client(WRITE_KEY, host=node.base, sync_mode=True)
            client.identify("ada", {"email": "ada@example.com"})
            client.track("ada", "signup")
            client.track("bob", "add_to_cart", {"product_id": "p1"})
            client.track("cyd", "add_to_cart", {"product_id": "p2"})
            client.track("cyd", "purchase")
            deadline = time.monotonic() + 60
            with httpx.Client(headers=node.admin_headers, timeout=5) as admin:
                while True:
                    fires = admin.get(node.url("/api/fires")).json()["fires"]
                    if {(f["trigger"], f["user_id"]) for f in fires} >= {("welcome", "ada"), ("cart", "bob")}:
                        break
                    assert worker.poll() is None, worker.communicate()[0]
                    assert time.monotonic() < deadline, f"no fires: {fires}\n{node.log_tail()}"
                    time.sleep(0.2)
                user = admin.get(node.url("/api/users/ada")).json()
                events = admin.get(node.url("/api/events"), params={"user": "cyd"}).json()["events"]
                ready = httpx.get(node.url("/readyz"))
            assert {(f["trigger"], f["user_id"]) for f in fires} == {("welcome", "ada"), ("cart", "bob")}
            assert user["traits"]["email"] == "ada@example.com"
            assert [e["event"]["event"] for e in reversed(events)] == ["add_to_cart", "purchase"]
            assert {e["decision"] for e in events} == {"accepted"}
            assert ready.status_code == 200
            # the ingest node delivers from the cluster's outbox, with the user's traits from their partition
            while not hook.requests:
                assert time.monotonic() < deadline, f"no delivery\n{node.log_tail()}"
                time.sleep(0.1)
            [sent] = hook.requests
            body = json.loads(sent.body)
            assert body["fire"]["trigger"] == "welcome" and body["user"]["traits"]["email"] == "ada@example.com"
            assert sent.headers["webhook-id"] == body["fire"]["fire_id"]
        finally:
            node.stop()
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, output


def test_the_cluster_flags_of_serve_go_with_cluster(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("HOOK", "http://127.0.0.1:9/hook"))
    result = subprocess.run(
        [sys.executable, "-m", "tripwire", "serve", "--rules", str(rules), "--kafka", "127.0.0.1:9092"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "go with --cluster" in result.stderr


def test_an_anonymous_visitor_and_the_user_they_become_share_a_partition(tmp_path: Path, schema: str) -> None:
    """Keyed by identity, a visitor's anonymous cart and the purchase the server sends later
    under the userId meet in one partition: the purchase cancels the cart as on one node."""
    from segment.analytics.client import Client

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("HOOK", "http://127.0.0.1:9/hook"))
    # ids that Kafka's default partitioner (CRC32 of the key) puts in different partitions
    people = [(a, u) for a, u in ((f"anon-{i}", f"user-{i}x") for i in range(40)) if crc32(a.encode()) % 2
              != crc32(u.encode()) % 2][:8]  # fmt: skip
    assert len(people) == 8
    with fresh_topic(2) as topic:
        env = {"TRIPWIRE_KAFKA": broker(), "TRIPWIRE_POSTGRES": postgres_dsn(), "TRIPWIRE_TOPIC": topic,
               "TRIPWIRE_SCHEMA": schema}  # fmt: skip
        node = ServerProcess(rules, tmp_path / "node", env=env, args=("--cluster",))
        worker = subprocess.Popen(
            [sys.executable, "-m", "tripwire", "worker", "--rules", str(rules), "--group", f"g-{topic}"],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            node.start()
            client = Client(WRITE_KEY, host=node.base, sync_mode=True)
            for anonymous, user in people:  # in the browser, then the server
                client.track(anonymous_id=anonymous, event="add_to_cart", properties={"product_id": "p1"})
                client.identify(user, {"email": f"{user}@example.com"}, anonymous_id=anonymous)
                client.track(user, "purchase")
            client.track(anonymous_id="anon-control", event="add_to_cart")  # nobody buys: it fires
            deadline = time.monotonic() + 60
            with httpx.Client(headers=node.admin_headers, timeout=5) as admin:
                while not any(f["trigger"] == "cart" for f in admin.get(node.url("/api/fires")).json()["fires"]):
                    assert worker.poll() is None, worker.communicate()[0]
                    assert time.monotonic() < deadline, node.log_tail()
                    time.sleep(0.2)
                time.sleep(1.0)  # every other cart's window has ended by now too
                fires = admin.get(node.url("/api/fires")).json()["fires"]
        finally:
            node.stop()
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=30)
    assert [(f["trigger"], f["user_id"]) for f in fires] == [("cart", "anon-control")]
