"""The admin API under `/api`: triggers, fires, users, the event log, and rules reloads.

Every route but the OpenAPI document needs `Authorization: Bearer <admin token>`.
The service's reads run in a worker thread, so a slow query never stalls ingest.
Query parameters are checked strictly: an unknown or malformed one is a 400 naming it,
so a typo such as `?users=` is reported rather than silently ignored.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tripwire.limits import MAX_DEPTH
from tripwire.server.auth import HOW_TO_PASS_ADMIN_TOKEN, Secret, bearer_token
from tripwire.server.metrics import Metrics
from tripwire.server.ports import ServiceAPI
from tripwire.server.replies import JSONReply, Rejection
from tripwire.timestamps import parse_ms

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_BODY_BYTES: Final = 64 * 1024  # an admin body is a few ids; this is room for a thousand and more
_decode = msgspec.json.decode

Endpoint = Callable[[Request], Awaitable[Response]]


def _bad_parameter(name: str, message: str) -> Rejection:
    return Rejection(400, "bad_parameter", f"{name}: {message}", parameter=name)


def query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once and each one of `allowed`; empty ones dropped."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            hint = f"allowed: {', '.join(allowed)}" if allowed else "this route takes none"
            raise _bad_parameter(name, f"unknown parameter; {hint}")
        if name in found:
            raise _bad_parameter(name, "given more than once")
        if value:
            found[name] = value
    return found


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise _bad_parameter("limit", f"expected a whole number from 1 to {MAX_LIMIT}, got {value!r}")
    return int(value)


def parse_since(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_ms(value)
    except ValueError:
        raise _bad_parameter(
            "since", f"expected an ISO-8601 time such as 2026-03-01T12:00:00Z, got {value!r}"
        ) from None


async def json_body(request: Request, example: str) -> Any:
    """The request body as JSON: 413 past MAX_BODY_BYTES, 400 saying what to send (`example`)
    when it is not JSON or is nested deeper than MAX_DEPTH levels (a recursive decoder's stack)."""
    size = f"{MAX_BODY_BYTES // 1024} KB ({MAX_BODY_BYTES} bytes)"
    too_large = Rejection(413, "too_large", f"the body is larger than {size}; send {example}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    too_deep = Rejection(400, "bad_json", f"the body is nested deeper than {MAX_DEPTH} levels; send {example}")
    try:
        value = _decode(body)
    except RecursionError:  # msgspec stops at the interpreter's recursion limit
        raise too_deep from None
    except msgspec.DecodeError as exc:
        raise Rejection(400, "bad_json", f"the body is not JSON ({exc}); send {example}") from None
    if _deeper_than(value, MAX_DEPTH):
        raise too_deep
    return value


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` holds objects or lists more than `levels` deep (itself the first), level by level."""
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(levels):  # after the n-th round, `level` holds the containers n + 1 deep
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, dict | list)]
        if not level:
            return False
    return bool(level)


class Admin:
    """The admin endpoints over one service."""

    def __init__(self, service: ServiceAPI, admin_token: Secret, metrics: Metrics) -> None:
        self.service = service
        self.admin_token = admin_token
        self.metrics = metrics

    def routes(self) -> list[Route]:
        guard = self._guarded
        return [
            Route("/api/triggers", guard(self.triggers), methods=["GET"], name="admin_triggers"),
            Route("/api/fires", guard(self.fires), methods=["GET"], name="admin_fires"),
            Route("/api/users/{user_id}", guard(self.user), methods=["GET"], name="admin_user"),
            Route("/api/events", guard(self.events), methods=["GET"], name="admin_events"),
            Route("/api/rules/reload", guard(self.reload), methods=["POST"], name="admin_reload"),
        ]

    def _guarded(self, endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            token = bearer_token(request.headers.get("authorization"))
            if not self.admin_token.matches(token):
                problem = "no admin token was given" if token is None else "the admin token is not valid"
                raise Rejection(
                    401, "unauthorized", f"{problem}; {HOW_TO_PASS_ADMIN_TOKEN}", headers={"WWW-Authenticate": "Bearer"}
                )
            return await endpoint(request)

        return guarded

    async def triggers(self, request: Request) -> Response:
        """Every trigger of the current rules, with its fire and suppression counts."""
        query(request, ())
        return JSONReply({"triggers": await run_in_threadpool(self.service.triggers)})

    async def fires(self, request: Request) -> Response:
        """Fires, newest first, filtered by trigger, user and time."""
        params = query(request, ("trigger", "user", "since", "limit"))
        fires = await run_in_threadpool(
            self.service.fires,
            trigger=params.get("trigger"),
            user=params.get("user"),
            since_ms=parse_since(params.get("since")),
            limit=parse_limit(params.get("limit")),
        )
        return JSONReply({"fires": fires})

    async def user(self, request: Request) -> Response:
        """One user: traits, open windows, counts, recent events and fires with their explanation."""
        query(request, ())
        user_id: str = request.path_params["user_id"]
        found = await run_in_threadpool(self.service.user, user_id)
        if found is None:
            raise Rejection(404, "not_found", f"no user {user_id!r} is known (by userId or anonymousId)")
        return JSONReply(found)

    async def events(self, request: Request) -> Response:
        """The event log, newest first, each event with its decision."""
        params = query(request, ("user", "limit"))
        limit = parse_limit(params.get("limit"))
        events = await run_in_threadpool(self.service.events, user=params.get("user"), limit=limit)
        return JSONReply({"events": events})

    async def reload(self, request: Request) -> Response:
        """Read the rules file again; on any problem the running rules stay (422 lists every problem)."""
        query(request, ())
        rules = await self.service.reload_rules()  # a RulesError is the 422 (replies.py)
        self.metrics.triggers(trigger.id for trigger in rules.triggers)
        triggers = await run_in_threadpool(self.service.triggers)
        return JSONReply({"reloaded": True, "file": rules.filename, "triggers": triggers})
