"""Structured JSON logs: one line per request, at debug when it went well, at warning when not
(an error status, or bad events in a batch otherwise taken).

Credentials never reach a log line: requests are logged by method, path, status and
duration only (no headers, no query string, no body); a processor masks any field whose
name says it holds a credential, in case a future call passes one, and the last redacts
URLs and tokens in every text, the rendered exception included (an HTTP client's error
may quote a webhook URL whose path is its secret). uvicorn's own lines go through the
same redaction (`RedactingFormatter`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.typing import FilteringBoundLogger, Processor

from tripwire.redact import redact_text

_CREDENTIAL_FIELDS: Final = frozenset(
    {"authorization", "admin_token", "token", "write_key", "writekey", "write_keys", "password", "secret",
     "inbox_secret", "api_key", "private_key", "vapid_private_key", "service_account", "headers", "cookie"}
)  # fmt: skip
MASK: Final = "**********"


def mask_credentials(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor masking every field named like a credential."""
    for name in event:
        if name.lower() in _CREDENTIAL_FIELDS:
            event[name] = MASK
    return event


def redact_values(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor redacting URLs and tokens in every text field (see `tripwire.redact`)."""
    for name, value in event.items():
        if isinstance(value, str):
            event[name] = redact_text(value)
        elif value is not None and not isinstance(value, (int, float, bool)):
            event[name] = redact_text(str(value))  # a URL object, an exception, a list of them
    return event


class RedactingFormatter(logging.Formatter):
    """A logging formatter whose whole line, traceback included, has URLs and tokens redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


# The chain `tripwire serve` logs through: level, UTC time, credentials masked, secrets redacted, JSON.
PROCESSORS: Final[tuple[Processor, ...]] = (
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    mask_credentials,
    structlog.processors.format_exc_info,
    redact_values,
    structlog.processors.JSONRenderer(),
)


def json_logger(stream: TextIO | None = None, level: int = logging.INFO) -> FilteringBoundLogger:
    """A logger writing one JSON object a line to `stream` (stderr by default), below `level` dropped."""
    logger: FilteringBoundLogger = structlog.wrap_logger(
        structlog.PrintLogger(stream or sys.stderr),
        processors=list(PROCESSORS),
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )
    return logger


class RequestLog:
    """ASGI middleware logging each HTTP request once, with the reason when it was turned down.

    Handlers note why a request failed in `request.state.error` (see `replies.handle_error`).
    """

    def __init__(self, app: ASGIApp, logger: FilteringBoundLogger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            self.logger.error("request failed", **self._fields(scope, 500, started), exc_info=True)
            raise
        fields = self._fields(scope, status, started)
        error = state.get("error")
        if status >= 400 or error is not None:
            self.logger.warning("request", **fields, error=error)
        else:
            self.logger.debug("request", **fields)

    @staticmethod
    def _fields(scope: Scope, status: int, started: float) -> dict[str, Any]:
        client = scope.get("client")
        return {
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 2),
            "client": client[0] if client else None,
        }
