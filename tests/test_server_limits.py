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


class Watch:
    """When each socket opened (just before its connection began, so no timer the server starts
    for it can have started earlier) and when it was seen closed by the server (at or after it was)."""

    def __init__(self) -> None:
        self.opened_at: list[float] = []
        self.closed: dict[int, float] = {}  # by index

    def note(self, opened: list[socket.socket], wait: float = 0.0) -> None:
        """Note the sockets the server has closed since the last look, waiting up to `wait` seconds for one."""
        poller = select.poll()  # not select(): it takes no descriptor past 1023
        waiting = {sock.fileno(): i for i, sock in enumerate(opened) if i not in self.closed}
        for fd in waiting:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(wait * 1000):
            if closed_by_server(opened[waiting[fd]]):
                self.closed[waiting[fd]] = time.monotonic()

    def until_all_closed(self, opened: list[socket.socket], deadline: float) -> None:
        while len(self.closed) < len(opened) and time.monotonic() < deadline:
            self.note(opened, wait=0.1)


@contextmanager
def sockets(
    server: ServerProcess, first_bytes: list[bytes], watch: Watch | None = None
) -> Iterator[list[socket.socket]]:
    """One connected socket per entry, each having sent its bytes; all closed on the way out."""
    opened: list[socket.socket] = []
    try:
        for data in first_bytes:
            began = time.monotonic()
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            if data:
                sock.sendall(data)
            sock.setblocking(False)
            opened.append(sock)
            if watch is not None:
                watch.opened_at.append(began)
                if len(opened) % 10 == 0:  # see the ones closed to make room soon after they are
                    watch.note(opened)
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


def test_half_open_sockets_neither_lock_clients_out_nor_stay_open(server: ServerProcess) -> None:
    partial = b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: "
    slow_body = b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"
    watch = Watch()
    with sockets(server, [partial] * HALF_OPEN + [b""] * SILENT + [slow_body] * SLOW_BODY, watch) as opened:
        watch.note(opened)
        # a well-behaved client is served at once, though there are more sockets than the cap
        started = time.monotonic()
        with httpx.Client(timeout=5) as client:
            for _ in range(3):
                assert client.get(server.url("/readyz")).status_code == 200
        assert time.monotonic() - started < 1.5
        # and none stays open: all are closed within a few timeouts of the last one opening
        watch.until_all_closed(opened, deadline=watch.opened_at[-1] + HEADER_TIMEOUT * 4)
        assert len(watch.closed) == len(opened), f"{len(opened) - len(watch.closed)} still open\n{server.log_tail()}"
    # A socket's timer starts after its `opened_at`, so one seen closed sooner than HEADER_TIMEOUT after
    # it was closed to make room, and any other by its timeout: no load on this machine blurs the two.
    evicted = {i for i, at in watch.closed.items() if at < watch.opened_at[i] + HEADER_TIMEOUT}
    assert len(evicted) >= HALF_OPEN + SILENT + SLOW_BODY - MAX_CONNECTIONS, sorted(evicted)
    # the newest half-open sockets were within the cap: their timeout closed them, and not before it
    assert [i for i in range(HALF_OPEN + SILENT) if i not in evicted], "no half-open socket lasted its timeout"
    slow = range(HALF_OPEN + SILENT, len(opened))
    assert not evicted.intersection(slow), "a request being served is never evicted, nor cut before its timeout"
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
