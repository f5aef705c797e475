"""Fixtures the channel tests share: a local stand-in server and HTTP clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from channel_kit import StandIn, stand_in
from tripwire.actions.transport import delivery_client


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
