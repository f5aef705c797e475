"""JSON replies, and the one table that turns every expected failure into an HTTP answer.

Every error body has the same shape, `{"success": false, "code": ..., "message": ...}`
plus details (`errors`, `parameter`, `problems`): Segment's SDKs read `code` and
`message` and report them to the developer.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tripwire.errors import OverloadedError, RulesError, StoreUnavailableError

# The store restarts or recovers within seconds; a client asked to wait longer only queues more.
UNAVAILABLE_RETRY_AFTER: Final = 5
_encode = msgspec.json.encode


class JSONReply(Response):
    """A JSON response encoded with msgspec (fast, and strict about what is JSON)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encode(content)


class Rejection(Exception):
    """A request the server turns down: the status, a code, a message saying what to fix.

    Not in the `tripwire.errors` tree: it is an HTTP answer raised to leave a handler
    early, never an error of tripwire itself, and it never leaves the HTTP layer.
    """

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details


def _rejection(exc: Exception) -> Rejection:
    """The one table of expected failures and their HTTP answers."""
    if isinstance(exc, Rejection):
        return exc
    if isinstance(exc, OverloadedError):
        retry = max(1, math.ceil(exc.retry_after))
        return Rejection(
            429,
            "overloaded",
            f"tripwire is taking in more events than it can write; retry after {retry}s",
            headers={"Retry-After": str(retry)},
        )
    if isinstance(exc, StoreUnavailableError):
        retry = UNAVAILABLE_RETRY_AFTER
        return Rejection(
            503,
            "unavailable",
            f"tripwire cannot store events right now ({exc or 'not running'}); retry after {retry}s",
            headers={"Retry-After": str(retry)},
        )
    if isinstance(exc, RulesError):
        problems = [
            {"file": p.file, "line": p.line, "trigger": p.trigger, "field": p.field, "message": p.message}
            for p in exc.problems
        ]
        count = len(problems)
        message = f"the rules file has {count} problem{'s' if count != 1 else ''}; the previous rules stay in force"
        return Rejection(422, "invalid_rules", message, problems=problems)
    if isinstance(exc, HTTPException):
        code, message = {
            404: ("not_found", "no such route; every route is listed in /api/openapi.json"),
            405: (
                "method_not_allowed",
                f"this route does not take this method; allowed: {(exc.headers or {}).get('Allow')}",
            ),
        }.get(exc.status_code, ("http_error", exc.detail))
        return Rejection(exc.status_code, code, message, headers=dict(exc.headers or {}))
    raise exc


def error_body(rejection: Rejection) -> dict[str, Any]:
    return {"success": False, "code": rejection.code, "message": rejection.message, **rejection.details}


async def handle_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: answer with the table's reply and note it for the request log."""
    rejection = _rejection(exc)
    request.state.error = f"{rejection.code}: {rejection.message}"
    return JSONReply(error_body(rejection), status_code=rejection.status, headers=rejection.headers)


HANDLED: Final[tuple[type[Exception], ...]] = (
    Rejection,
    OverloadedError,
    StoreUnavailableError,
    RulesError,
    HTTPException,
)
