"""The services scripts/services starts answer on loopback as the cluster needs them."""

from __future__ import annotations

import socket
import struct

import psycopg

from conftest import postgres_dsn


def test_postgres_answers_and_is_recent_enough() -> None:
    """Identity columns need 10, and the store is tested on what Debian ships (15 or newer)."""
    with psycopg.connect(postgres_dsn(), connect_timeout=10) as conn:
        version = conn.info.server_version
        address = conn.execute("SELECT inet_server_addr()::text").fetchone()
    assert version >= 130_000, version
    assert address is not None and address[0] in {"127.0.0.1/32", "::1/128"}


def test_kafka_answers_an_api_versions_request(kafka_bootstrap: str) -> None:
    """A broker, not just an open port: Kafka's ApiVersions (key 18, version 0) lists its APIs."""
    host, port = kafka_bootstrap.rsplit(":", 1)
    client = b"tripwire-test"
    request = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _read(sock, 4))[0]
        correlation, error, count = struct.unpack(">ihi", _read(sock, size)[:10])
    assert (correlation, error) == (7, 0)
    assert count > 10  # produce, fetch, metadata, offsets, groups, ...


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the broker closed the connection"
        data += chunk
    return data
