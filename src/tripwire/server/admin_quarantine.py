"""Admin routes for the quarantine: events that could not be applied or saved, why, and a retry."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tripwire.errors import AlreadyRetriedError, NotRetryableError
from tripwire.server.admin import Admin, json_body, parse_limit, query
from tripwire.server.replies import JSONReply, Rejection


class QuarantineAdmin:
    """`/api/quarantine`, guarded by the admin token like the rest of `/api`."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin

    def routes(self) -> list[Route]:
        guard = self.admin._guarded
        return [
            Route("/api/quarantine", guard(self.list), methods=["GET"], name="admin_quarantine"),
            Route("/api/quarantine/retry", guard(self.retry), methods=["POST"], name="admin_quarantine_retry"),
        ]

    async def list(self, request: Request) -> Response:
        """Quarantined events newest first, each with its reason, body and what a retry decided."""
        params = query(request, ("limit", "pending"))
        pending = params.get("pending")
        if pending not in (None, "true", "false"):
            raise Rejection(400, "bad_parameter", f"pending: expected true or false, got {pending!r}", field="pending")
        service = self.admin.service
        entries = await run_in_threadpool(
            service.quarantined, limit=parse_limit(params.get("limit")), pending_only=pending == "true"
        )
        total, waiting = await run_in_threadpool(service.quarantine_counts)
        return JSONReply({"total": total, "not_retried": waiting, "events": entries})

    async def retry(self, request: Request) -> Response:
        """Send quarantined events through again as new arrivals: `{"id": 3}` or `{"all": true}`."""
        query(request, ())
        body = await json_body(request, '{"id": 3} or {"all": true}')
        entry = body.get("id") if isinstance(body, dict) else None
        everything = isinstance(body, dict) and body.get("all") is True
        valid_id = isinstance(entry, int) and not isinstance(entry, bool) and 0 < entry < 2**63
        if everything == valid_id:
            raise Rejection(400, "bad_body", 'send {"id": 3} with a quarantine id, or {"all": true}')
        try:
            retried = await self.admin.service.retry_quarantined(entry if valid_id else None)
        except KeyError:
            raise Rejection(404, "not_found", f"no quarantined event {entry}") from None
        except AlreadyRetriedError as exc:
            raise Rejection(409, "already_retried", f"{exc}; it is in the log with that decision") from None
        except NotRetryableError as exc:
            raise Rejection(409, "not_retryable", str(exc)) from None
        return JSONReply({"retried": retried})
