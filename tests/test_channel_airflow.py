"""The Airflow channel against a local stand-in for Airflow 2's stable REST API."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse, Response

from channel_kit import FIRE_ID, Received, StandIn, action, message
from tripwire.actions.airflow import AirflowChannel

TOKEN = "airflow-api-token-7c1d"


class Airflow:
    """`POST /api/v1/dags/{dag_id}/dagRuns` with basic or bearer auth, a unique dag_run_id per DAG."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}

    def __call__(self, request: Received) -> Response:
        auth = request.headers.get("authorization", "")
        basic = "Basic " + base64.b64encode(b"tripwire:s3cret").decode()
        if auth not in (basic, f"Bearer {TOKEN}"):
            return _problem(401, "Unauthorized", "No credentials found")
        parts = request.path.split("/")
        if request.method != "POST" or parts[:4] != ["", "api", "v1", "dags"] or parts[5:] != ["dagRuns"]:
            return _problem(404, "Not Found", "no such route")
        dag_id = parts[4]
        if dag_id != "winback":
            return _problem(404, "DAG not found", f"DAG with dag_id: '{dag_id}' not found")
        body = json.loads(request.body)
        run_id = body["dag_run_id"]
        if (dag_id, run_id) in self.runs:
            return _problem(409, "Conflict", f"DAGRun with DAG ID: '{dag_id}' and DAGRun ID: '{run_id}' already exists")
        run = {"dag_id": dag_id, "dag_run_id": run_id, "conf": body["conf"], "state": "queued"}
        self.runs[dag_id, run_id] = run
        return JSONResponse(run)


def _problem(status: int, title: str, detail: str) -> Response:
    return JSONResponse({"status": status, "title": title, "detail": detail, "type": "about:blank"}, status_code=status)


@pytest.fixture
def airflow(server: StandIn) -> Iterator[tuple[StandIn, Airflow]]:
    server.requests.clear()
    fake = Airflow()
    server.respond = fake
    yield server, fake


def channel(http: httpx.AsyncClient, url: str, auth: str, dag: str = "winback") -> AirflowChannel:
    yaml = f"""\
  dag:
    type: airflow
    url: {url}/
    dag_id: {dag}
{auth}
    conf:
      segment: "{{{{ user.traits.plan }}}}"
      sku: "{{{{ events[0].properties.sku }}}}"
    allow_private: true
"""
    return AirflowChannel(action(yaml, "dag", {"AIRFLOW_PASSWORD": "s3cret", "AIRFLOW_TOKEN": TOKEN}), http)


BASIC = "    username: tripwire\n    password: ${AIRFLOW_PASSWORD}"
BEARER = "    token: ${AIRFLOW_TOKEN}"


@pytest.mark.parametrize("auth", [BASIC, BEARER], ids=["basic", "bearer"])
async def test_a_dag_run_is_triggered_with_the_fire_in_its_conf(
    airflow: tuple[StandIn, Airflow], http: httpx.AsyncClient, auth: str
) -> None:
    server, fake = airflow
    dag = channel(http, server.url, auth)
    sent = message(dag.action, traits={"plan": "pro"})
    outcome = await dag.attempt(sent)
    assert outcome.ok and outcome.status == 200, outcome.error
    assert outcome.detail == {"dag_run_id": f"tripwire-{FIRE_ID}"}
    [request] = server.requests
    assert request.path == "/api/v1/dags/winback/dagRuns"
    run = fake.runs["winback", f"tripwire-{FIRE_ID}"]
    assert run["conf"] == {"fire": sent.fire, "user": sent.user, "segment": "pro", "sku": "A-1"}


async def test_a_retry_after_the_run_was_created_counts_as_delivered(
    airflow: tuple[StandIn, Airflow], http: httpx.AsyncClient
) -> None:
    server, fake = airflow
    dag = channel(http, server.url, BEARER)
    first = await dag.attempt(message(dag.action, traits={"plan": "pro"}))
    again = await dag.attempt(message(dag.action, traits={"plan": "pro"}))
    assert first.ok and again.ok
    assert again.status == 409 and again.detail == {"dag_run_id": f"tripwire-{FIRE_ID}", "existing": True}
    assert len(fake.runs) == 1 and len(server.requests) == 2


async def test_bad_credentials_fail_for_good(airflow: tuple[StandIn, Airflow], http: httpx.AsyncClient) -> None:
    server, _fake = airflow
    dag = channel(http, server.url, "    username: tripwire\n    password: wrong")
    outcome = await dag.attempt(message(dag.action, traits={"plan": "pro"}))
    assert outcome.permanent and outcome.status == 401
    assert "check the action's username/password or token" in (outcome.error or "")


async def test_an_unknown_dag_fails_for_good(airflow: tuple[StandIn, Airflow], http: httpx.AsyncClient) -> None:
    server, _fake = airflow
    dag = channel(http, server.url, BEARER, dag="nope")
    outcome = await dag.attempt(message(dag.action, traits={"plan": "pro"}))
    assert outcome.permanent and outcome.status == 404 and "'nope'" in (outcome.error or "")


async def test_an_airflow_outage_is_retried(airflow: tuple[StandIn, Airflow], http: httpx.AsyncClient) -> None:
    server, _fake = airflow
    server.respond = lambda _r: _problem(503, "Service Unavailable", "scheduler down")
    dag = channel(http, server.url, BEARER)
    outcome = await dag.attempt(message(dag.action, traits={"plan": "pro"}))
    assert not outcome.ok and not outcome.permanent and outcome.status == 503
