"""Segment's Node SDK (`@segment/analytics-node`, the real npm package) against a live
`tripwire serve` with the README's example rules.

Issue 7 item 13: with `flushAt: 1` an identify and a track go out as two requests a few
milliseconds apart; the clock-skew correction used to shift each by its own request's
network delay, so a slower identify landed after the track and `vip_purchase` (guard
`trait email exists`) was suppressed. With a good clock (within clock_skew_tolerance)
the timestamps are kept and the order holds.

The package is installed with npm into a cache folder under the home folder (outside
the repository), once. Without node or npm the test is skipped with the reason, except
under CI (`CI=true`), where it fails: CI must run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from serverproc import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
SHOP_RULES = ROOT / "examples" / "shop" / "rules.yaml"
PACKAGE = "@segment/analytics-node@2.3.0"
CACHE = Path.home() / ".cache" / "tripwire-tests"
NODE_DIR = CACHE / "node"

# The identify's request is held back after the SDK stamped its sentAt, as a slow network
# would hold it; the track goes out 5 ms after the identify and is not held.
SCRIPT = r"""
const { Analytics, FetchHTTPClient } = require('@segment/analytics-node');
const [host, writeKey, userId, holdMs] = process.argv.slice(2);

class SlowIdentify extends FetchHTTPClient {
  async makeRequest(options) {
    const body = JSON.parse(options.body);
    if (body.batch.some((e) => e.type === 'identify')) {
      await new Promise((resolve) => setTimeout(resolve, Number(holdMs)));
    }
    return super.makeRequest(options);
  }
}

const analytics = new Analytics({ writeKey, host, flushAt: 1, httpClient: new SlowIdentify(), maxRetries: 2 });
const failures = [];
analytics.on('error', (err) => failures.push(String(err.reason || err)));
analytics.identify({ userId, traits: { email: `${userId}@example.com`, name: 'Ada' } });
setTimeout(() => {
  analytics.track({ userId, event: 'purchase', properties: { total: 650, currency: 'EUR' } });
  analytics.closeAndFlush({ timeout: 10000 }).then(() => {
    if (failures.length) { console.error(failures.join('\n')); process.exit(1); }
  });
}, 5);
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the Node SDK test")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The installed package's node_modules folder (installed with npm on first use)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are needed to run Segment's Node SDK")
    installed = NODE_DIR / "node_modules" / "@segment" / "analytics-node" / "package.json"
    if not installed.exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        (NODE_DIR / "package.json").write_text('{"name": "tripwire-tests-node", "private": true}\n')
        command = [npm or "npm", "install", "--no-audit", "--no-fund", "--cache", str(CACHE / "npm-cache"), PACKAGE]
        done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0 or not installed.exists():
            _unavailable(f"npm install {PACKAGE} failed: {done.stderr.strip()[-500:]}")
    return NODE_DIR / "node_modules"


@pytest.fixture
def server(tmp_path: Path) -> ServerProcess:
    # The webhook and email actions point at stand-ins that are not running here: their
    # deliveries fail and retry, which does not change what fires.
    with ServerProcess(SHOP_RULES, tmp_path / "data") as running:
        yield running  # type: ignore[misc]  # a generator fixture


def fires_of(server: ServerProcess, user: str, timeout: float = 20.0) -> list[dict[str, object]]:
    """The user's vip_purchase fires, once there is one (it is final once the watermark,
    `allowed_lateness` behind the wall clock, passes the purchase)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while True:
            reply = client.get(server.url("/api/fires"), params={"user": user}, headers=server.admin_headers)
            assert reply.status_code == 200, reply.text
            fires = [f for f in reply.json()["fires"] if f["trigger"] == "vip_purchase"]
            if fires or time.monotonic() > deadline:
                return fires
            time.sleep(0.2)


@pytest.mark.parametrize("hold_ms", [300])
def test_identify_then_track_from_the_node_sdk_fires_vip_purchase(
    node_modules: Path, server: ServerProcess, tmp_path: Path, hold_ms: int
) -> None:
    user = f"node-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "send.js"
    script.write_text(SCRIPT)
    env = {**os.environ, "NODE_PATH": str(node_modules)}
    sent = subprocess.run(
        ["node", str(script), server.base, server.write_key, user, str(hold_ms)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, f"the Node SDK failed:\n{sent.stdout}\n{sent.stderr}\n{server.log_tail()}"
    with httpx.Client(timeout=5) as client:
        reply = client.get(server.url("/api/events"), params={"user": user}, headers=server.admin_headers)
    logged = reply.json()["events"]
    assert sorted(e["event"]["type"] for e in logged) == ["identify", "track"]
    assert all(e["event"]["sentAt"] and "originalTimestamp" not in e["event"] for e in logged)  # kept, not corrected
    [fire] = fires_of(server, user)
    assert fire["suppressed"] is None, fire
