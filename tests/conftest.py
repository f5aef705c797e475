"""Fixtures the tests share: a local stand-in server, HTTP clients, and each store adapter's location."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from channel_kit import StandIn, stand_in
from tripwire.actions.transport import delivery_client
from tripwire.store import Stores, open_stores


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    """One stand-in per test module; each test sets what it answers."""
    with stand_in() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
async def guarded_http() -> AsyncIterator[httpx.AsyncClient]:
    """The client the dispatcher gives actions without allow_private: public addresses only."""
    async with delivery_client(allow_private=False) as client:
        yield client


# -- services: the store adapters' locations ---------------------------------------------


def service_address(variable: str) -> str:
    """The address of a test service from `variable`; without it the test skips, but fails in CI."""
    value = os.environ.get(variable, "")
    if not value:
        why = f'{variable} is not set: run eval "$(scripts/services start)" (scripts/test does it)'
        if os.environ.get("CI") == "true":
            pytest.fail(why + "; in CI every test of the services must run", pytrace=False)
        pytest.skip(why)
    return value


def postgres_dsn() -> str:
    """The PostgreSQL to test against (`TRIPWIRE_POSTGRES`)."""
    return service_address("TRIPWIRE_POSTGRES")


@pytest.fixture
def kafka_bootstrap() -> str:
    """The Kafka broker to test against (`TRIPWIRE_KAFKA`, host:port)."""
    return service_address("TRIPWIRE_KAFKA")


class StoreLocation:
    """One test's own place to store: a fresh data folder, or a fresh schema of the test PostgreSQL.

    `open()` opens the adapters there (again and again, to test reopening; with a partition,
    scoped to that partition's log); all are closed, and the schema dropped, when the test ends.
    """

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.schema = f"test_{uuid.uuid4().hex[:16]}"
        self.where: str | Path = postgres_dsn() if kind == "postgres" else folder / "data"
        self.opened: list[Stores] = []

    def open(self, partition: int | None = None) -> Stores:
        stores = open_stores(self.where, schema=self.schema, partition=partition)
        self.opened.append(stores)
        return stores

    def remove(self) -> None:
        for stores in self.opened:
            stores.close()
        if self.kind == "postgres":
            drop_schema(self.schema)


def drop_schema(name: str) -> None:
    """Drop a test's schema of the test PostgreSQL, with everything in it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema name of the test's own on the test PostgreSQL, dropped when the test ends."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    drop_schema(name)


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreLocation]:
    """Each adapter in turn, at a location of the test's own (the contract suites run on every one)."""
    place = StoreLocation(request.param, tmp_path)
    try:
        yield place
    finally:
        place.remove()


@pytest.fixture
def postgres_location(tmp_path: Path) -> Iterator[StoreLocation]:
    """A fresh schema of the test PostgreSQL, for what only PostgreSQL does (a worker's partitions)."""
    place = StoreLocation("postgres", tmp_path)
    try:
        yield place
    finally:
        place.remove()


@pytest.fixture
def stores(location: StoreLocation) -> Stores:
    """The adapters opened at the test's location."""
    return location.open()
