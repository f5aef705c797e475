"""A real HTTP receiver on 127.0.0.1 that records requests and answers from a script."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each request with the next (status, headers) of `script`, then 200s."""

    url: str
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    on_request: list[object] = field(default_factory=list)


@contextmanager
def receiver(script: list[tuple[int, dict[str, str]]] | None = None) -> Iterator[Receiver]:
    state = Receiver("", list(script or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the stdlib names it so
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            with lock:
                state.requests.append(
                    Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status, headers = state.script.pop(0) if state.script else (200, {})
            for hook in state.on_request:
                hook()  # type: ignore[operator]  # callables registered by the test
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_PUT = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
