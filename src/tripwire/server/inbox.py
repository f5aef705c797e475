"""The in-app inbox API under `/v1/inbox`, called by the customer's app on behalf of one signed-in user.

Two credentials, as Intercom's identity verification does it: the write key (HTTP Basic
user name, as for ingest) says which tripwire; `X-User-Id` and `X-User-Token`, where the
token is hex HMAC-SHA256(inbox secret, user id) computed by the customer's backend, prove
which user. Browsers' EventSource cannot send headers, so the stream also takes them as
`writeKey`, `userId` and `userToken` query parameters.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tripwire.actions.in_app import Inbox
from tripwire.server.admin import query
from tripwire.server.auth import HOW_TO_PASS_WRITE_KEY, Secret, any_matches, basic_user
from tripwire.server.replies import JSONReply, Rejection
from tripwire.store.inbox import InboxItem
from tripwire.timestamps import format_ms

HEARTBEAT_SECONDS: Final = 15.0
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100
MAX_READ_IDS: Final = 1000
MAX_READ_BODY: Final = 64 * 1024  # a thousand ids take under 20 KB
MAX_ID: Final = 2**63 - 1  # SQLite's largest integer: a larger one cannot name a message
HOW_TO_SIGN_USER: Final = (
    "send X-User-Id and X-User-Token, where the token is the hex HMAC-SHA256 of the user id keyed with the "
    "inbox secret, computed on your backend"
)


def user_token(secret: Secret, user_id: str) -> str:
    """The token that proves `user_id`: hex HMAC-SHA256(inbox secret, user id)."""
    return hmac.new(secret.reveal().encode(), user_id.encode(), hashlib.sha256).hexdigest()


def item_json(item: InboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "title": item.title,
        "body": item.body,
        "url": item.url,
        "created_at": format_ms(item.created_at),
        "expires_at": None if item.expires_at is None else format_ms(item.expires_at),
        "read": item.read_at is not None,
        "read_at": None if item.read_at is None else format_ms(item.read_at),
        "fire_id": item.fire_id,
        "action": item.action,
    }


def sse_frame(item: InboxItem) -> str:
    """One server-sent event: the message as JSON, its id for Last-Event-ID."""
    return f"id: {item.id}\nevent: message\ndata: {msgspec.json.encode(item_json(item)).decode()}\n\n"


class InboxAPI:
    """The routes, over one inbox and the server's credentials."""

    def __init__(
        self, inbox: Inbox, write_keys: Sequence[Secret], secret: Secret, heartbeat: float = HEARTBEAT_SECONDS
    ) -> None:
        if not write_keys:
            raise ValueError("the inbox API needs at least one write key")
        self.inbox = inbox
        self.write_keys = tuple(write_keys)
        self.secret = secret
        self.heartbeat = heartbeat

    def routes(self) -> list[Route]:
        return [
            Route("/v1/inbox", self.list_messages, methods=["GET"]),
            Route("/v1/inbox/read", self.mark_read, methods=["POST"]),
            Route("/v1/inbox/stream", self.stream, methods=["GET"]),
        ]

    def user(self, request: Request, *, from_query: bool = False) -> str:
        """The verified user id of the request, or 401/403 saying what is missing or wrong."""
        params: Mapping[str, str] = request.query_params if from_query else {}
        key = basic_user(request.headers.get("authorization")) or params.get("writeKey")
        if not any_matches(self.write_keys, key):
            problem = "no write key was given" if key is None else "the write key is not valid"
            raise Rejection(401, "unauthorized", f"{problem}; {HOW_TO_PASS_WRITE_KEY}")
        user_id = request.headers.get("x-user-id") or params.get("userId")
        token = request.headers.get("x-user-token") or params.get("userToken")
        if not user_id or not token:
            missing = "X-User-Id" if not user_id else "X-User-Token"
            raise Rejection(401, "unauthorized", f"{missing} is missing; {HOW_TO_SIGN_USER}")
        expected = user_token(self.secret, user_id)
        if not hmac.compare_digest(expected.encode(), token.strip().lower().encode()):
            raise Rejection(403, "forbidden", f"X-User-Token does not match X-User-Id {user_id!r}; {HOW_TO_SIGN_USER}")
        return user_id

    async def list_messages(self, request: Request) -> Response:
        user_id = self.user(request)
        params = query(request, ("limit", "before"))
        limit = _whole(params.get("limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
        before = _whole(params.get("before"), "before", None, None)
        items = await self.inbox.messages(user_id, limit=limit, before=before)
        unread = await self.inbox.unread(user_id)
        return JSONReply({"messages": [item_json(i) for i in items], "unread": unread})

    async def mark_read(self, request: Request) -> Response:
        user_id = self.user(request)
        body = await _read_body(request)
        try:
            payload = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError) as exc:
            problem = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
            raise Rejection(400, "bad_json", f"the body is not valid JSON: {problem}") from None
        ids: list[int] | None
        if isinstance(payload, dict) and payload.get("all") is True and "ids" not in payload:
            ids = None
        elif isinstance(payload, dict) and isinstance(payload.get("ids"), list):
            ids = payload["ids"]
            if len(ids) > MAX_READ_IDS or not all(i.__class__ is int and 1 <= i <= MAX_ID for i in ids):
                raise Rejection(
                    400,
                    "bad_request",
                    f"ids: expected a list of at most {MAX_READ_IDS} message ids (whole numbers from 1 to {MAX_ID})",
                    field="ids",
                )
        else:
            raise Rejection(400, "bad_request", 'expected {"ids": [message ids]} or {"all": true}', field="ids")
        read = await self.inbox.mark_read(user_id, ids)
        return JSONReply({"read": read, "unread": await self.inbox.unread(user_id)})

    async def stream(self, request: Request) -> Response:
        user_id = self.user(request, from_query=True)
        # An explicit `lastEventId` that is not an id is the app's mistake: 400. The header is
        # what EventSource sends by itself on reconnecting, and a 400 would end its reconnecting
        # for good, so a bad one is ignored: the stream starts with new messages, as a first one does.
        param = request.query_params.get("lastEventId") or None
        header = _whole_or_none(request.headers.get("last-event-id"), 0)
        last_id = header if header is not None else _whole(param, "lastEventId", None, None, minimum=0)
        return StreamingResponse(
            self._events(user_id, last_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self, user_id: str, last_id: int | None) -> AsyncIterator[str]:
        # Subscribed before the first byte goes out, so a message stored after the client
        # sees the stream open is never missed; ids already sent are skipped.
        with self.inbox.feed.subscribe(user_id) as subscription:
            yield "retry: 3000\n\n"
            if last_id is not None:
                missed = await self.inbox.messages(user_id, after=last_id, limit=MAX_LIMIT)
                for old in reversed(missed):
                    last_id = old.id
                    yield sse_frame(old)
            while True:
                try:
                    item = await subscription.next(self.heartbeat)
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                if item is None:
                    return
                if last_id is not None and item.id <= last_id:
                    continue
                last_id = item.id
                yield sse_frame(item)


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_READ_BODY:
            raise Rejection(
                413, "too_large", f"the body is larger than {MAX_READ_BODY // 1024} KB; mark at most {MAX_READ_IDS} ids"
            )
    return bytes(body)


def _whole_or_none(value: str | None, minimum: int) -> int | None:
    """`value` as a whole number from `minimum` to MAX_ID, else None; ASCII digits only
    (`str.isdigit` takes "²" and "٣", which `int` then refuses or reads)."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > len(str(MAX_ID)):
        return None
    number = int(value)
    return number if minimum <= number <= MAX_ID else None


def _whole(value: str | None, name: str, default: int | None, maximum: int | None, *, minimum: int = 1) -> Any:
    if value is None:
        return default
    number = _whole_or_none(value, minimum)
    if number is None or (maximum is not None and number > maximum):
        bound = f"from {minimum} to {maximum if maximum is not None else MAX_ID}"
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise Rejection(400, "bad_parameter", f"{name}: expected a whole number {bound}, got {shown!r}", parameter=name)
    return number


def inbox_routes(
    inbox: Inbox, *, write_keys: Sequence[Secret], secret: Secret, heartbeat: float = HEARTBEAT_SECONDS
) -> list[Route]:
    """`GET /v1/inbox`, `POST /v1/inbox/read` and `GET /v1/inbox/stream` over `inbox`.

    Errors are raised as `Rejection`, so mount them in an app with `replies.handle_error`.
    """
    return InboxAPI(inbox, write_keys, secret, heartbeat).routes()
