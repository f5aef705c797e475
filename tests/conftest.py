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


def postgres_dsn() -> str:
    """The PostgreSQL to test against (`TRIPWIRE_POSTGRES`); without it a test skips, but fails in CI."""
    dsn = os.environ.get("TRIPWIRE_POSTGRES", "")
    if not dsn:
        why = 'TRIPWIRE_POSTGRES is not set: run eval "$(scripts/services start)" (scripts/test does it)'
        if os.environ.get("CI") == "true":
            pytest.fail(why + "; in CI every PostgreSQL test must run", pytrace=False)
        pytest.skip(why)
    return dsn


class StoreLocation:
    """One test's own place to store: a fresh data folder, or a fresh schema of the test PostgreSQL.

    `open()` opens the adapters there (again and again, to test reopening); all are closed,
    and the schema dropped, when the test ends.
    """

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.schema = f"test_{uuid.uuid4().hex[:16]}"
        self.where: str | Path = postgres_dsn() if kind == "postgres" else folder / "data"
        self.opened: list[Stores] = []

    def open(self) -> Stores:
        stores = open_stores(self.where, schema=self.schema)
        self.opened.append(stores)
        return stores

    def remove(self) -> None:
        for stores in self.opened:
            stores.close()
        if self.kind == "postgres":
            import psycopg
            from psycopg import sql

            with psycopg.connect(str(self.where), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreLocation]:
    """Each adapter in turn, at a location of the test's own (the contract suites run on every one)."""
    place = StoreLocation(request.param, tmp_path)
    try:
        yield place
    finally:
        place.remove()


@pytest.fixture
def stores(location: StoreLocation) -> Stores:
    """The adapters opened at the test's location."""
    return location.open()
