"""Apache Airflow: triggers a DAG run through the stable REST API (`/api/v1`, Airflow 2).

The run id is `tripwire-<fire_id>`, so a retried delivery cannot start a second run:
Airflow answers 409 Conflict, which counts as delivered.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from tripwire import __version__
from tripwire.actions.base import Channel, Message, Outcome, PermanentError


def dag_run_id(fire_id: str) -> str:
    return f"tripwire-{fire_id}"


class AirflowChannel(Channel):
    """`POST {url}/api/v1/dags/{dag_id}/dagRuns` with the fire and user in `conf`."""

    type = "airflow"

    async def send(self, message: Message) -> Outcome:
        options = self.action.options
        conf: dict[str, Any] = {"fire": message.fire, "user": message.user}
        for name in options.get("conf", {}):
            conf[name] = message.render(f"conf.{name}")
        run_id = dag_run_id(message.idempotency_key)
        body = json.dumps({"dag_run_id": run_id, "conf": conf}, separators=(",", ":"))
        headers = {"content-type": "application/json", "user-agent": f"tripwire/{__version__}"}
        auth: httpx.Auth | None = None
        if options.get("token"):
            headers["authorization"] = f"Bearer {options['token']}"
        elif options.get("username"):
            auth = httpx.BasicAuth(options["username"], options.get("password", ""))
        url = f"{options['url'].rstrip('/')}/api/v1/dags/{quote(options['dag_id'], safe='')}/dagRuns"
        try:
            response = await self.request("POST", url, content=body, headers=headers, auth=auth)
        except PermanentError as exc:
            if exc.status == 409:  # this fire's run exists: an earlier attempt got through
                return Outcome.success(409, dag_run_id=run_id, existing=True)
            if exc.status in (401, 403):
                raise PermanentError(f"{exc}; check the action's username/password or token", exc.status) from None
            if exc.status == 404:
                raise PermanentError(f"{exc}; is the DAG id {options['dag_id']!r} right?", 404) from None
            raise
        return Outcome.success(response.status_code, dag_run_id=run_id)
