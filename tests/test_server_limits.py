"""Connection limits of a real `tripwire serve` on loopback: sockets that never finish their
request cannot lock other clients out, and the server closes them after its timeouts."""

from __future__ import annotations

import resource
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx
import pytest

from serverproc import ServerProcess

HEADER_TIMEOUT = 2.0
MAX_CONNECTIONS = 150
HALF_OPEN = 270  # send part of the request line and headers, then nothing
SILENT = 20  # connect and send nothing at all
SLOW_BODY = 10  # complete headers, then none of the body they announce


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * (HALF_OPEN + SILENT + SLOW_BODY) + 256  # this process's sockets, and the server's
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))  # raises when the hard limit is lower
    folder = tmp_path_factory.mktemp("limits")
    rules = folder / "rules.yaml"
    rules.write_text("triggers:\n  a: {when: x}\n")
    env = {
        "TRIPWIRE_HEADER_TIMEOUT": f"{HEADER_TIMEOUT:g}s",
        "TRIPWIRE_BODY_TIMEOUT": f"{HEADER_TIMEOUT:g}s",
        "TRIPWIRE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with ServerProcess(rules, folder / "data", env=env) as running:
        yield running


@contextmanager
def sockets(server: ServerProcess, first_bytes: list[bytes]) -> Iterator[list[socket.socket]]:
    """One connected socket per entry, each having sent its bytes; all closed on the way out."""
    opened: list[socket.socket] = []
    try:
        for data in first_bytes:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            if data:
                sock.sendall(data)
            sock.setblocking(False)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed `sock` (end of stream or reset); reads any reply first."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def wait_closed(opened: list[socket.socket], deadline: float) -> dict[int, float]:
    """When (seconds from now) the server closed each socket, by index, until all are or the deadline."""
    began = time.monotonic()
    closed: dict[int, float] = {}
    while len(closed) < len(opened) and time.monotonic() < began + deadline:
        open_now = [(i, s) for i, s in enumerate(opened) if i not in closed]
        readable, _, _ = select.select([s for _, s in open_now][:500], [], [], 0.1)
        for i, sock in open_now:
            if sock in readable and closed_by_server(sock):
                closed[i] = time.monotonic() - began
    return closed


def test_half_open_sockets_neither_lock_clients_out_nor_stay_open(server: ServerProcess) -> None:
    partial = b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: "
    slow_body = b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"
    begun = time.monotonic()
    with sockets(server, [partial] * HALF_OPEN + [b""] * SILENT + [slow_body] * SLOW_BODY) as opened:
        opened_in = time.monotonic() - begun
        # a well-behaved client is served at once, though there are more sockets than the cap
        started = time.monotonic()
        with httpx.Client(timeout=5) as client:
            for _ in range(3):
                assert client.get(server.url("/readyz")).status_code == 200
        assert time.monotonic() - started < 1.5
        closed = wait_closed(opened, deadline=HEADER_TIMEOUT + 6)
        assert len(closed) == len(opened), f"{len(opened) - len(closed)} sockets still open\n{server.log_tail()}"
    # past the cap, the oldest were closed to make room as the newest came in ...
    evicted = [i for i, at in closed.items() if at + opened_in < HEADER_TIMEOUT * 0.75]
    assert len(evicted) >= HALF_OPEN + SILENT + SLOW_BODY - MAX_CONNECTIONS
    # ... and the rest once their headers (or body) took longer than the timeout, not before
    timed_out = [at for at in closed.values() if at + opened_in >= HEADER_TIMEOUT * 0.75]
    assert timed_out and max(timed_out) + opened_in >= HEADER_TIMEOUT
    slow = [closed[i] for i in range(HALF_OPEN + SILENT, len(opened))]
    assert all(at + opened_in >= HEADER_TIMEOUT * 0.75 for at in slow), "a request being served is never evicted"
    assert server.running()


def test_a_connection_idle_after_a_response_is_closed_and_a_trickle_of_blank_lines_does_not_keep_it(
    server: ServerProcess,
) -> None:
    request = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with sockets(server, [request]) as (sock,):
        deadline = time.monotonic() + HEADER_TIMEOUT + 6
        while time.monotonic() < deadline:  # a blank line every half second, never a request
            try:
                sock.send(b"\r\n")
            except OSError:
                break
            if closed_by_server(sock):
                break
            time.sleep(0.5)
        assert time.monotonic() < deadline, "the server kept a connection that never sent a request"


def test_request_headers_past_the_size_limit_get_431(server: ServerProcess) -> None:
    huge = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        with suppress(OSError):  # the server may close while we are still sending
            sock.sendall(huge)
        reply = b""
        with suppress(ConnectionError):
            while chunk := sock.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
