"""Deliveries connect only to public addresses, and only to the address that was checked.

The policy from a table of addresses; then real connections through the dispatcher's
client, with a resolver the test controls (the sockets still really open, to 127.0.0.1
only): a name that resolves to loopback is refused unless the action allows private
addresses, the connection goes to the address checked even when a second lookup would
answer otherwise (DNS rebinding), TLS verifies the URL's name, and redirects are not
followed.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from channel_kit import StandIn, action, message, stand_in
from receiver import receiver
from test_dispatcher import START, Clock, rules_text, start
from tripwire.actions.addresses import refusal
from tripwire.actions.transport import PinnedBackend, RefusedDestinationError, delivery_client
from tripwire.actions.webhook import WebhookChannel

HOST = "hooks.example.test"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "shared address space"),
        ("100.100.100.200", "shared address space"),  # a cloud's metadata service lives here
        ("0.0.0.0", "this network"),
        ("0.1.2.3", "this network"),
        ("224.0.1.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("192.0.0.170", "IETF protocol assignments"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("192.88.99.1", "6to4 relay"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "unique local"),
        ("fd12:3456::1", "unique local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("::ffff:127.0.0.1", "carries 127.0.0.1"),
        ("::ffff:169.254.169.254", "carries 169.254.169.254"),
        ("2002:7f00:1::1", "carries 127.0.0.1"),  # 6to4 of a loopback address
        ("2002:a9fe:a9fe::1", "carries 169.254.169.254"),
        ("2002:6440:1::1", "carries 100.64.0.1"),
        ("64:ff9b::127.0.0.1", "carries 127.0.0.1"),  # NAT64 of a loopback address
        ("64:ff9b::10.0.0.1", "carries 10.0.0.1"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("2001::1", "Teredo"),
        ("2001:db8::1", "documentation"),
        ("100::1", "discard"),
    ],
)
def test_an_address_that_is_not_public_is_refused(address: str, why: str) -> None:
    assert why in (refusal(address) or "")


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8",
     "2002:0808:0808::1", "64:ff9b::8.8.8.8"],
)  # fmt: skip
def test_a_public_address_is_allowed(address: str) -> None:
    assert refusal(address) is None


class Resolver:
    """Answers a name from a script (one answer per lookup, the last repeated) and counts lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host != HOST:
            raise OSError(f"{host} is not in this test's resolver")
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


async def test_a_name_resolving_to_loopback_is_refused_unless_the_action_allows_private(
    tmp_path: Path, clock: Clock
) -> None:
    (tmp_path / "guarded").mkdir()
    (tmp_path / "allowed").mkdir()
    with receiver() as rx:
        url = rx.url.replace("127.0.0.1", HOST)
        guarded = rules_text(url).replace("    allow_private: true\n", "")
        async with start(tmp_path / "guarded", guarded, clock, resolver=Resolver(["127.0.0.1"])) as h:
            await h.buy("u1")
            await h.until(lambda: bool(h.statuses()) and h.statuses()[0][0] == "dead")
            refused = h.statuses()[0][1] or ""
        assert rx.requests == []
        assert f"{HOST} resolves to 127.0.0.1, which is a private address (in 127.0.0.0/8, loopback)" in refused
        assert "allow_private: true" in refused

        async with start(tmp_path / "allowed", rules_text(url), clock, resolver=Resolver(["127.0.0.1"])) as h:
            await h.buy("u1")
            await h.until(lambda: h.statuses() == [("delivered", None)])
    [request] = rx.requests
    assert request.headers["host"] == f"{HOST}:{url.rsplit(':', 1)[1]}"


async def test_the_connection_goes_to_the_checked_address_whatever_a_second_lookup_says(
    tmp_path: Path, clock: Clock
) -> None:
    """DNS rebinding: the first answer is checked and connected to; a second lookup would answer
    127.0.0.2, where nothing listens, so a connection made after a second lookup would fail."""
    resolver = Resolver(["127.0.0.1"], ["127.0.0.2"])
    with receiver() as rx:
        async with start(tmp_path, rules_text(rx.url.replace("127.0.0.1", HOST)), clock, resolver=resolver) as h:
            await h.buy("u1")
            await h.until(lambda: h.statuses() == [("delivered", None)])
    assert len(rx.requests) == 1
    assert resolver.lookups == [HOST]  # one lookup for the check and the connection together


class NeverConnect(httpcore.AsyncNetworkBackend):
    """Fails the test if anything tries to open a connection."""

    async def connect_tcp(self, *args: object, **kwargs: object) -> httpcore.AsyncNetworkStream:
        raise AssertionError(f"a connection was attempted: {args}")


async def test_a_name_with_any_private_address_among_its_answers_is_refused_before_connecting() -> None:
    backend = PinnedBackend(Resolver(["203.0.114.1", "127.0.0.1"]), allow_private=False)
    backend.inner = NeverConnect()
    with pytest.raises(RefusedDestinationError, match=r"resolves to 127\.0\.0\.1"):
        await backend.connect_tcp(HOST, 443)


async def test_an_unresolvable_name_is_a_connect_error_worth_retrying() -> None:
    backend = PinnedBackend(Resolver(["127.0.0.1"]), allow_private=False)
    with pytest.raises(httpcore.ConnectError, match=r"cannot resolve nowhere\.test"):
        await backend.connect_tcp("nowhere.test", 443)


async def test_a_redirect_is_not_followed(tmp_path: Path, clock: Clock) -> None:
    with receiver([(302, {"location": "http://169.254.169.254/latest/meta-data/"})]) as rx:
        async with start(tmp_path, rules_text(rx.url), clock) as h:
            await h.buy("u1")
            await h.until(lambda: bool(h.statuses()) and h.statuses()[0][0] == "dead")
    assert len(rx.requests) == 1
    assert (h.statuses()[0][1] or "").startswith("permanent failure: HTTP 302")


# -- TLS to a pinned address --------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for HOST only (not for 127.0.0.1): its key and its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    key_file, cert_file = folder / "key.pem", folder / "cert.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[StandIn]:
    key_file, cert_file = certificate
    with stand_in(ssl_keyfile=str(key_file), ssl_certfile=str(cert_file)) as running:
        yield running


async def test_tls_to_the_pinned_address_verifies_and_names_the_urls_host(
    tls_server: StandIn, certificate: tuple[Path, Path]
) -> None:
    port = tls_server.url.rsplit(":", 1)[1]
    trust = ssl.create_default_context(cafile=str(certificate[1]))
    config = action(f"  hook: {{type: webhook, url: 'https://{HOST}:{port}/hooks', allow_private: true}}\n", "hook")
    async with delivery_client(allow_private=True, resolver=Resolver(["127.0.0.1"]), verify=trust) as http:
        outcome = await WebhookChannel(config, http).attempt(message(config))
    assert outcome.ok, outcome.error
    assert tls_server.requests[-1].headers["host"] == f"{HOST}:{port}"

    # the same server by its address: the certificate does not name it, so TLS refuses it
    by_address = action(
        f"  hook: {{type: webhook, url: 'https://127.0.0.1:{port}/hooks', allow_private: true}}\n", "hook"
    )
    async with delivery_client(allow_private=True, verify=trust) as http:
        refused = await WebhookChannel(by_address, http).attempt(message(by_address))
    assert not refused.ok and "certificate" in (refused.error or "").lower()
