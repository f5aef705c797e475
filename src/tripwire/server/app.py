"""The HTTP server of `tripwire serve`: ingest, admin API and operations endpoints in one app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from structlog.typing import FilteringBoundLogger

from tripwire.server.admin import Admin
from tripwire.server.admin_deliveries import DeliveriesAdmin
from tripwire.server.admin_quarantine import QuarantineAdmin
from tripwire.server.auth import Secret
from tripwire.server.ingest import MAX_BATCH_BYTES, MAX_EVENT_BYTES, Ingest, Limits
from tripwire.server.logs import RequestLog
from tripwire.server.metrics import CONTENT_TYPE, Metrics
from tripwire.server.openapi import build_openapi
from tripwire.server.ports import ServiceAPI
from tripwire.server.replies import HANDLED, JSONReply, handle_error
from tripwire.store import Goals, Outbox


class IngestCORS:
    """CORS for `/v1/*` only, so analytics.js can send from any site's pages.

    A write key is public by design (it ships in page source); the admin API gets no CORS.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Content-Encoding",
                "X-User-Id",
                "X-User-Token",
                "Last-Event-ID",
            ],
            max_age=86_400,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(
    service: ServiceAPI,
    *,
    write_keys: Sequence[Secret],
    admin_token: Secret,
    max_body: int = MAX_BATCH_BYTES,
    max_event: int = MAX_EVENT_BYTES,
    logger: FilteringBoundLogger | None = None,
    metrics: Metrics | None = None,
    delivery: tuple[Outbox, Goals] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The app over `service`; give the same `metrics` to the service so it can count fires.

    `max_body` bounds a batch request and `max_event` one event, in bytes after
    decompression (Segment's 500 KB and 32 KB by default). Without `logger`, requests are
    logged through structlog's global configuration. With `delivery` (the outbox and the
    goals), the admin API also shows deliveries and conversions; `extra_routes` (such as
    the in-app inbox) are mounted as they are.
    """
    log: FilteringBoundLogger = logger if logger is not None else structlog.get_logger("tripwire.http")
    metrics = metrics if metrics is not None else Metrics()
    metrics.triggers(trigger.id for trigger in service.rules.triggers)
    ingest = Ingest(service, write_keys, metrics, Limits(event=max_event, batch=max_body))
    admin = Admin(service, admin_token, metrics)
    document = build_openapi()

    async def healthz(_request: Request) -> Response:
        return JSONReply({"ok": True})

    async def readyz(_request: Request) -> Response:
        ready = service.ready()
        return JSONReply({"ready": ready}, status_code=200 if ready else 503)

    deliveries = DeliveriesAdmin(admin, *delivery) if delivery is not None else None

    async def prometheus(_request: Request) -> Response:
        metrics.status(service.status())
        metrics.quarantine(*await run_in_threadpool(service.quarantine_counts))
        if delivery is not None:
            outbox, goals = delivery
            metrics.delivery_state(await run_in_threadpool(outbox.action_stats), await run_in_threadpool(goals.stats))
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def openapi(_request: Request) -> Response:
        return JSONReply(document)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/api/openapi.json", openapi, methods=["GET"]),
        *ingest.routes(),
        *admin.routes(),
        *QuarantineAdmin(admin).routes(),
        *(deliveries.routes() if deliveries is not None else ()),
        *extra_routes,
    ]
    handlers: dict[Any, Any] = dict.fromkeys(HANDLED, handle_error)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestLog, logger=log), Middleware(IngestCORS)],
        exception_handlers=handlers,
    )
    app.state.metrics = metrics
    app.state.service = service
    return app
