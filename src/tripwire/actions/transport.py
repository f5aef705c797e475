"""The HTTP client deliveries go through: every connection opens to an address that was checked.

For each new connection the resolver is asked once, every address it answers is checked
against the policy of `addresses.refusal` (unless the action sets `allow_private`), and the
socket opens to one of those very addresses, so there is no second lookup that a DNS
rebinding could answer differently. TLS still verifies the URL's host name and sends it as
SNI, and the Host header is the URL's. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable

import httpcore
import httpx

from tripwire.actions.addresses import refusal

# (host, port) -> the addresses to connect to, in order of preference
Resolver = Callable[[str, int], Awaitable[list[str]]]
# as httpcore types a socket option
SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class RefusedDestinationError(Exception):
    """A destination the address policy refuses: the delivery fails for good."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (an IP literal is its own answer)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving once, checking, and connecting to the checked address."""

    def __init__(self, resolver: Resolver, *, allow_private: bool) -> None:
        self.resolver = resolver
        self.allow_private = allow_private
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no address")
        if not self.allow_private:
            for address in addresses:
                why = refusal(address)
                if why is not None:
                    what = host if address == host else f"{host} resolves to {address}, which"
                    raise RefusedDestinationError(
                        f"{what} is a private address ({why}); set allow_private: true on the action if this "
                        "receiver is meant to be internal"
                    )
        error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that connects through a PinnedBackend."""

    def __init__(self, backend: PinnedBackend, verify: ssl.SSLContext | None = None) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, while httpcore's pool does (its extension point for
        # this); so the pool httpx built is replaced by the same pool over our backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify or httpx.create_ssl_context(trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=backend,
        )


def delivery_client(
    *, allow_private: bool, resolver: Resolver = system_resolver, verify: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    """The client the channels of actions with this `allow_private` send through (`verify`: the CAs to trust)."""
    transport = PinnedTransport(PinnedBackend(resolver, allow_private=allow_private), verify)
    # No client-wide timeout: each request carries its action's (see Channel.request).
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False, timeout=None)
