"""Segment's HTTP Tracking API: `POST /v1/track` ... `/v1/batch`, as unmodified Segment SDKs call it.

A request is answered 200 only once the service has written its events to disk, so a
client that saw success never has to send them again; late and duplicate events are
answered 200 as well, since sending them again cannot change their fate. Bad events
are named, field by field, and never stop the good events of the same batch.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tripwire import limits
from tripwire.arrival import batch_member, receive_event
from tripwire.errors import EventError
from tripwire.events import Event
from tripwire.server import rawjson
from tripwire.server.auth import HOW_TO_PASS_WRITE_KEY, Secret, any_matches, basic_user
from tripwire.server.metrics import Metrics
from tripwire.server.ports import ServiceAPI
from tripwire.server.replies import JSONReply, Rejection
from tripwire.timestamps import format_ms

MAX_EVENT_BYTES: Final = 32 * 1024
MAX_BATCH_BYTES: Final = 500 * 1024
SINGLE_TYPES: Final = ("track", "identify", "page", "screen", "alias", "group")
BATCH_PATHS: Final = ("/v1/batch", "/v1/import")
_decode = msgspec.json.decode
_encode = msgspec.json.encode
# The common case: one decode that also holds every structural limit (tripwire.limits).
_decode_event = msgspec.json.Decoder(limits.EVENT).decode
_decode_batch = msgspec.json.Decoder(limits.BATCH).decode
_UNDECODABLE = (msgspec.DecodeError, RecursionError)


@dataclass(frozen=True)
class Limits:
    """Segment's size limits, in bytes after decompression."""

    event: int = MAX_EVENT_BYTES
    batch: int = MAX_BATCH_BYTES


def _too_large(what: str, limit: int) -> Rejection:
    hint = "send fewer events per request" if what == "batch" else "send less data in properties, traits or context"
    return Rejection(
        413, "too_large", f"the {what} is larger than {limit // 1024} KB ({limit} bytes after decompression); {hint}"
    )


class Inflater:
    """Gunzips a body chunk by chunk, never producing more than `limit` + 1 bytes (no zip bombs)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.out = bytearray()
        self._zlib = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)

    def feed(self, chunk: bytes) -> bool:
        """Inflate `chunk`; False as soon as the output passes the limit."""
        data = chunk
        while data and not self._zlib.eof:
            # max_length 0 would mean "unbounded"; the room is always at least 1 here.
            self.out += self._zlib.decompress(data, self.limit + 1 - len(self.out))
            if len(self.out) > self.limit:
                return False
            data = self._zlib.unconsumed_tail
        return True

    @property
    def complete(self) -> bool:
        return self._zlib.eof


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, gunzipped when `Content-Encoding: gzip`; 413 past `limit`, 400 if corrupt."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise Rejection(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip or none"
        )
    inflater = Inflater(limit) if "gzip" in encoding else None
    # gzip adds a few bytes to data it cannot compress; a body larger than that is over anyway.
    raw_limit = limit + limit // 100 + 1024 if inflater else limit
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > raw_limit:
        raise _too_large(what, limit)
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > raw_limit or (inflater is not None and not inflater.feed(chunk)):
                raise _too_large(what, limit)
    except zlib.error as exc:
        raise Rejection(400, "bad_gzip", f"the body is not valid gzip (Content-Encoding: gzip): {exc}") from None
    if inflater is None:
        return bytes(raw)
    if not inflater.complete:
        raise Rejection(400, "bad_gzip", "the gzip body ends before its end of stream; was it cut short?")
    return bytes(inflater.out)


def decode_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or 400 naming what is wrong with it (and where, when it can tell)."""
    try:
        payload = _decode(body)
    except _UNDECODABLE as exc:
        raise _bad_json(body, exc, "") from None
    if not isinstance(payload, dict):
        kind = "a list" if isinstance(payload, list) else type(payload).__name__
        raise Rejection(400, "bad_request", f"the body must be a JSON object, not {kind}")
    return payload


def _bad_json(text: bytes, exc: Exception, where: str) -> Rejection:
    path = _join(where, rawjson.failure_path(text, exc, limits.MAX_DEPTH))
    return Rejection(400, "bad_json", f"the body is not valid JSON: {_decode_problem(exc)}", field=path or None)


def _decode_problem(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return f"objects and lists are nested far deeper than {limits.MAX_DEPTH} levels; send flatter data"
    # msgspec's own path (`$[...]`) cannot name object keys; the field carries ours instead.
    return str(exc).split(" - at `", 1)[0]


def _join(where: str, path: str) -> str:
    if not where:
        return path
    return f"{where}.{path}" if path and path[0] != "[" else where + path


def decode_item(text: bytes) -> Any:
    """One event's JSON text as what it decodes to, or the EventError naming where it does not."""
    try:
        return _decode(text)
    except _UNDECODABLE as exc:
        path = rawjson.failure_path(text, exc, limits.MAX_DEPTH)
        return EventError(path or "(event)", f"not valid JSON: {_decode_problem(exc)}")


def salvage_batch(body: bytes, exc: Exception) -> dict[str, Any]:
    """A batch body that does not decode as a whole, read member by member and event by event.

    Events that do not decode stand in `batch` as their EventError, so the others are kept.
    Raises the 400 when the body is not an object holding a `batch` list, or when another
    member does not decode.
    """
    found = rawjson.members(body)
    if found is None:
        raise _bad_json(body, exc, "")
    payload: dict[str, Any] = {}
    for key_text, value_text in found:
        try:
            key = _decode(key_text)
        except _UNDECODABLE as key_exc:
            raise _bad_json(body, key_exc, "") from None
        if key == "batch" and (pieces := rawjson.items(value_text)) is not None:
            payload[key] = [decode_item(piece) for piece in pieces]
            continue
        try:
            payload[key] = _decode(value_text)
        except _UNDECODABLE as member_exc:
            raise _bad_json(value_text, member_exc, str(key)) from None
    return payload


def _decode_batch_body(body: bytes) -> tuple[dict[str, Any], bool]:
    """The batch body, and whether its decode already held the structural limits."""
    try:
        return _decode_batch(body), True
    except _UNDECODABLE:
        pass
    try:
        payload = _decode(body)
    except _UNDECODABLE as exc:
        return salvage_batch(body, exc), False
    if not isinstance(payload, dict):
        return decode_object(body), False  # raises the 400 naming what the body is instead
    return payload, False


class Ingest:
    """The ingest endpoints over one service."""

    def __init__(
        self,
        service: ServiceAPI,
        write_keys: Sequence[Secret],
        metrics: Metrics,
        limits: Limits,
    ) -> None:
        if not write_keys:
            raise ValueError("ingest needs at least one write key")
        self.service = service
        self.write_keys = tuple(write_keys)
        self.metrics = metrics
        self.limits = limits

    def routes(self) -> list[Route]:
        single = [
            Route(f"/v1/{type_}", self.single, methods=["POST"], name=f"ingest_{type_}") for type_ in SINGLE_TYPES
        ]
        batch = [Route(path, self.batch, methods=["POST"], name=f"ingest_{path[4:]}") for path in BATCH_PATHS]
        return single + batch

    # -- endpoints ---------------------------------------------------------------------

    async def single(self, request: Request) -> Response:
        """One event; its `type` is the last segment of the path."""
        started = time.perf_counter()
        header_key = self._header_key(request)
        body = await read_body(request, self.limits.event, "event")
        try:
            payload, checked = _decode_event(body), True
        except _UNDECODABLE:
            payload, checked = decode_object(body), False  # finds what is wrong, or that nothing is
        self._authorize(header_key, payload)
        payload["type"] = request.url.path.rsplit("/", 1)[-1]
        self.metrics.received(1)
        try:
            if not checked:
                limits.check(payload)
            now = self.service.now_ms()
            event = receive_event(payload, now=now, received_at=format_ms(now), skew_tolerance=self._skew_tolerance())
        except EventError as exc:
            return self._all_bad([{"index": 0, "field": exc.field, "message": exc.message}], request)
        await self._submit([event], started)
        return JSONReply({"success": True})

    async def batch(self, request: Request) -> Response:
        """A list of events under `batch`, with a shared `sentAt` and `context`."""
        started = time.perf_counter()
        header_key = self._header_key(request)
        body = await read_body(request, self.limits.batch, "batch")
        payload, checked = _decode_batch_body(body)
        self._authorize(header_key, payload)
        items = payload.get("batch")
        if not isinstance(items, list):
            raise Rejection(400, "bad_request", "batch: expected a list of events", field="batch")
        sent_at = payload.get("sentAt")
        context = payload.get("context")
        if context is not None and not isinstance(context, dict):
            raise Rejection(400, "bad_request", "context: expected a JSON object", field="context")
        if context is not None and not checked:
            try:
                limits.check(context, "context")
            except EventError as exc:
                raise Rejection(400, "bad_request", f"{exc.field}: {exc.message}", field=exc.field) from None
        self.metrics.received(len(items))
        now = self.service.now_ms()
        received_at = format_ms(now)  # one instant for the whole request
        tolerance = self._skew_tolerance()
        check_size = len(body) > self.limits.event  # no event of a smaller body can be over the limit
        events: list[Event] = []
        errors: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                if item.__class__ is EventError:
                    raise item  # it did not decode (see salvage_batch)
                if not checked and item.__class__ is dict:
                    limits.check(item)
                events.append(self._prepare_item(item, sent_at, context, now, received_at, tolerance, check_size))
            except EventError as exc:
                errors.append({"index": index, "field": exc.field, "message": exc.message})
        if errors and not events:
            return self._all_bad(errors, request)
        if events:
            await self._submit(events, started)
        if not errors:
            return JSONReply({"success": True})
        self.metrics.bad(len(errors))
        first = errors[0]
        request.state.error = (
            f"bad_events: {len(errors)} bad, {len(events)} kept; first: {first['field']}: {first['message']}"
        )
        return JSONReply({"success": True, "accepted": len(events), "errors": errors})

    # -- steps -------------------------------------------------------------------------

    @staticmethod
    def _header_key(request: Request) -> str | None:
        return basic_user(request.headers.get("authorization"))

    def _authorize(self, header_key: str | None, payload: dict[str, Any]) -> None:
        body_key = payload.pop("writeKey", None)
        # A key in the header decides: a wrong one is refused even when the body holds another.
        candidate = header_key if header_key is not None else body_key
        if not isinstance(candidate, str) or not any_matches(self.write_keys, candidate):
            problem = "no write key was given" if candidate is None else "the write key is not valid"
            raise Rejection(401, "unauthorized", f"{problem}; {HOW_TO_PASS_WRITE_KEY}")

    def _prepare_item(
        self,
        item: Any,
        sent_at: Any,
        context: dict[str, Any] | None,
        now: int,
        received_at: str,
        tolerance: int,
        check_size: bool,
    ) -> Event:
        """One event of a batch, with the batch's `sentAt` and `context` under its own fields."""
        if not isinstance(item, dict):
            raise EventError("(event)", f"an event is a JSON object, not {type(item).__name__}")
        size = len(_encode(item)) if check_size else 0
        if size > self.limits.event:
            raise EventError(
                "(event)",
                f"the event is {size} bytes JSON-encoded; the limit is {self.limits.event // 1024} KB "
                f"({self.limits.event} bytes): send less data in properties, traits or context",
            )
        return receive_event(batch_member(item, sent_at, context), now=now, received_at=received_at,
                             skew_tolerance=tolerance)  # fmt: skip

    def _skew_tolerance(self) -> int:
        return self.service.rules.settings.clock_skew_tolerance

    async def _submit(self, events: list[Event], started: float) -> None:
        decisions = await self.service.submit(events)
        self.metrics.decided(decisions)
        self.metrics.latency(time.perf_counter() - started)

    def _all_bad(self, errors: list[dict[str, Any]], request: Request) -> Response:
        self.metrics.bad(len(errors))
        first = errors[0]
        noun = "the event is" if len(errors) == 1 else f"all {len(errors)} events are"
        message = f"{noun} bad; first: {first['field']}: {first['message']}"
        request.state.error = f"bad_request: {message}"
        body = {"success": False, "code": "bad_request", "message": message, "errors": errors}
        return JSONReply(body, status_code=400)
