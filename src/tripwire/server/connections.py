"""Connection limits of `tripwire serve`, so clients that never finish cannot exhaust the process.

uvicorn closes a keep-alive connection that stays idle after a response, but keeps every
other connection open for as long as the client likes: one that never finishes its request
line and headers (slowloris), or its body, holds a file descriptor and, past
`limit_concurrency`, turns every other client away. It has no timer of its own for either.

The smallest honest guard is a subclass of uvicorn's httptools protocol (the one tripwire
runs on; httptools is a dependency) with one timer per connection: from the first byte of
a request (or the connection's opening) its headers must be complete within
`header_timeout` and then its body within `body_timeout`, else the server closes it. And a
cap: past `max_connections` open connections, a new one makes room by closing the oldest
connection that is between requests (still reading headers, or idle on keep-alive); when
every one is serving a request, the new one is closed at once. So half-open sockets are
the first to go, and a client that sends its request at once always gets in.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Final

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Descriptors beside the sockets: SQLite files (three per connection, one connection per
# thread), the outgoing HTTP pools of the channels, logs.
RESERVED_FDS: Final = 256


def _reply(status: str, text: str, *headers: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, written before the request was read."""
    body = text.encode()
    head = [f"HTTP/1.1 {status}", "content-type: text/plain; charset=utf-8", f"content-length: {len(body)}",
            "connection: close", *headers]  # fmt: skip
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


_TOO_LARGE: Final = _reply("431 Request Header Fields Too Large", "the request line and headers are too large")
_FULL: Final = _reply("503 Service Unavailable", "too many open connections; retry", "retry-after: 1")


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a request may take to arrive, how long an idle connection stays, how many are open."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000
    max_header_bytes: int = 64 * 1024


def fit_to_fd_limit(limits: ConnectionLimits) -> ConnectionLimits:
    """`limits` with max_connections lowered to what the open-files limit allows (raised first, if it can be)."""
    needed = limits.max_connections + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return limits
    allowed = max(1, soft - RESERVED_FDS)
    structlog.get_logger("tripwire.server").warning(
        "max_connections lowered to fit the open-files limit (ulimit -n)",
        asked=limits.max_connections,
        allowed=allowed,
        open_files_limit=soft,
    )
    return ConnectionLimits(
        limits.header_timeout, limits.body_timeout, limits.keep_alive_timeout, allowed, limits.max_header_bytes
    )


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the timers and the cap of `limits`; one class per server."""

    class GuardedProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _serving = False  # headers complete, response not yet: never closed to make room
        _header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                oldest = next(iter(between_requests), None)
                if oldest is None:  # every connection is serving a request: this one waits for none
                    transport.write(_FULL)
                    transport.close()
                    return
                oldest._forget()
                oldest.transport.close()
            self._arm(limits.header_timeout)

        def data_received(self, data: bytes) -> None:
            if not self._serving:
                self._header_bytes += len(data)
                if self._timer is None:  # the first byte after an idle keep-alive: a request begins
                    self._arm(limits.header_timeout)
            super().data_received(data)
            if not self._serving and self._header_bytes > limits.max_header_bytes and not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()

        def on_headers_complete(self) -> None:
            self._serving = True
            self._header_bytes = 0
            between_requests.pop(self, None)
            self._arm(limits.body_timeout)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            self._serving = False
            self._disarm()  # uvicorn's keep-alive timer takes over from here
            super().on_response_complete()
            if not self.transport.is_closing():
                between_requests[self] = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            super().connection_lost(exc)

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._expired)
            if not self._serving:
                between_requests.pop(self, None)
                between_requests[self] = None  # newest last

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _forget(self) -> None:
            self._disarm()
            between_requests.pop(self, None)

        def _expired(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                self.transport.close()

    between_requests: dict[GuardedProtocol, None] = {}  # oldest first: the connections that may be closed
    return GuardedProtocol
