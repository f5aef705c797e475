"""Admin routes for delivery: what was sent, held, dropped or gave up, why, and with what effect."""

from __future__ import annotations

from dataclasses import asdict

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tripwire.actions.goals import lift
from tripwire.server import views
from tripwire.server.admin import MAX_LIMIT, Admin, _bad_parameter, json_body, parse_limit, query
from tripwire.server.replies import JSONReply, Rejection
from tripwire.store import Goals, Outbox
from tripwire.timestamps import format_ms

STATUSES = ("pending", "sending", "delivered", "dead", "dropped")


class DeliveriesAdmin:
    """`/api/deliveries` and `/api/stats`, guarded by the admin token like the rest of `/api`."""

    def __init__(self, admin: Admin, outbox: Outbox, goals: Goals) -> None:
        self.admin = admin
        self.outbox = outbox
        self.goals = goals

    def routes(self) -> list[Route]:
        guard = self.admin._guarded
        return [
            Route("/api/deliveries", guard(self.list), methods=["GET"], name="admin_deliveries"),
            Route("/api/deliveries/retry", guard(self.retry), methods=["POST"], name="admin_deliveries_retry"),
            Route("/api/deliveries/{delivery_id}", guard(self.one), methods=["GET"], name="admin_delivery"),
            Route("/api/stats", guard(self.stats), methods=["GET"], name="admin_stats"),
        ]

    async def list(self, request: Request) -> Response:
        """Deliveries newest first, by status, user or fire."""
        params = query(request, ("status", "user", "fire", "limit"))
        status = params.get("status")
        if status is not None and status not in STATUSES:
            raise _bad_parameter("status", f"expected one of {', '.join(STATUSES)}, got {status!r}")
        rows = await run_in_threadpool(
            self.outbox.find,
            status=status,
            user=params.get("user"),
            fire_id=params.get("fire"),
            limit=parse_limit(params.get("limit")),
        )
        return JSONReply({"deliveries": [views.delivery(row) for row in rows]})

    async def one(self, request: Request) -> Response:
        """One delivery with every attempt: when, outcome, HTTP status, latency, error."""
        query(request, ())
        raw_id: str = request.path_params["delivery_id"]
        if not raw_id.isdigit():
            raise Rejection(404, "not_found", f"no delivery {raw_id!r}: delivery ids are whole numbers")
        delivery_id = int(raw_id)
        rows = await run_in_threadpool(self.outbox.find, delivery_id=delivery_id, limit=1)
        if not rows:
            raise Rejection(404, "not_found", f"no delivery {delivery_id}")
        attempts = await run_in_threadpool(self.outbox.attempts, delivery_id)
        out = views.delivery(rows[0])
        out["attempts"] = [{**asdict(a), "started_at": format_ms(a.started_at)} for a in attempts]
        return JSONReply(out)

    async def retry(self, request: Request) -> Response:
        """Queue dead deliveries again: `{"ids": [...]}` or `{"all": true}`."""
        query(request, ())
        body = await json_body(request, '{"ids": [1, 2]} or {"all": true}')
        ids = body.get("ids") if isinstance(body, dict) else None
        everything = isinstance(body, dict) and body.get("all") is True
        # an id past 64 bits cannot be bound in SQL, and SQLite binds at most 32,766 values at once
        valid_ids = (
            isinstance(ids, list)
            and 0 < len(ids) <= MAX_LIMIT
            and all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in ids)
        )
        if not everything and not valid_ids:
            raise Rejection(
                400, "bad_body", f'send {{"ids": [1, 2]}} with up to {MAX_LIMIT} delivery ids, or {{"all": true}}'
            )
        now = self.admin.service.now_ms()
        count = await run_in_threadpool(self.outbox.retry_dead, now, None if everything else ids)
        return JSONReply({"retried": count})

    async def stats(self, request: Request) -> Response:
        """Per action: attempts, successes, failures, latency, deliveries by status.
        Per trigger: fires delivered and held out, conversions of each, and the lift."""
        query(request, ())
        actions = await run_in_threadpool(self.outbox.action_stats)
        triggers = await run_in_threadpool(self.goals.stats)
        for entry in triggers.values():
            entry.update(lift(entry))
        return JSONReply({"actions": actions, "triggers": triggers})
