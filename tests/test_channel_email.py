"""The email channel against a real SMTP server (aiosmtpd on 127.0.0.1): parts, headers, TLS, AUTH, SMTP replies."""

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from channel_kit import FIRE_ID, action, free_port, message
from tripwire.actions.email import EmailChannel

USER = "mailer@shop.example"
PASSWORD = "correct horse battery staple"


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it receives; `refuse` scripts a reply to RCPT TO."""

    received: list[tuple[Envelope, Session]] = field(default_factory=list)
    refuse: str | None = None
    mechanisms: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str, options: Any) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.received.append((envelope, session))
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        self.mechanisms.append(mechanism)
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (USER.encode(), PASSWORD.encode())
        return AuthResult(success=ok, handled=False)

    def mail(self, index: int = -1) -> EmailMessage:
        envelope, _session = self.received[index]
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed


def lines(part: EmailMessage) -> str:
    """A part's text with the wire's CRLF line ends as newlines."""
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


@dataclass
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made now."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tripwire test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = Certificate(folder / "cert.pem", folder / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def smtp_server() -> Iterator[Any]:
    """Start an SMTP server with the given options; stopped after the test."""
    started: list[Controller] = []

    def start(mailbox: Mailbox, **options: Any) -> int:
        port = free_port()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        started.append(controller)
        return port

    yield start
    for controller in started:
        controller.stop()


def channel(http: httpx.AsyncClient, smtp: str, extra: str = "", environ: dict[str, str] | None = None) -> EmailChannel:
    yaml = f"""\
  mail:
    type: email
    smtp: {smtp}
    from: "Shop <hello@shop.example>"
    reply_to: help@shop.example
    subject: "{{{{ user.traits.name }}}}, your cart is waiting"
    text: |
      Hi {{{{ user.traits.name }}}}, you left {{{{ events[0].properties.sku }}}} in your cart.
    html: |
      <p>Hi {{{{ user.traits.name }}}}, you left <b>{{{{ events[0].properties.sku }}}}</b> in your cart.</p>
{extra}"""
    return EmailChannel(action(yaml, "mail", environ), http)


TRAITS = {"email": "ada@example.com", "name": "Ada <script>"}


async def test_the_mail_arrives_with_both_parts_and_its_headers(smtp_server: Any, http: httpx.AsyncClient) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)
    mail = channel(http, f"{{host: 127.0.0.1, port: {port}, security: none}}")
    outcome = await mail.attempt(message(mail.action, traits=TRAITS))
    assert outcome.ok, outcome.error
    envelope, _session = mailbox.received[0]
    assert envelope.mail_from == "hello@shop.example" and envelope.rcpt_tos == ["ada@example.com"]
    got = mailbox.mail()
    assert got["From"] == "Shop <hello@shop.example>"
    assert got["To"] == "ada@example.com"
    assert got["Reply-To"] == "help@shop.example"
    assert got["Subject"] == "Ada <script>, your cart is waiting"
    assert got["Message-ID"] == f"<{FIRE_ID}.mail@shop.example>"
    assert got["X-Tripwire-Fire"] == FIRE_ID
    assert got["Date"] is not None
    assert got.get_content_type() == "multipart/alternative"
    text = got.get_body(("plain",))
    html = got.get_body(("html",))
    assert text is not None and html is not None
    assert lines(text) == "Hi Ada <script>, you left A-1 in your cart.\n"
    # the HTML part escapes what templates insert; the text part does not need to
    assert lines(html) == "<p>Hi Ada &lt;script&gt;, you left <b>A-1</b> in your cart.</p>\n"
    assert outcome.detail["message_id"] == got["Message-ID"]


async def test_a_retry_sends_the_same_message_id(smtp_server: Any, http: httpx.AsyncClient) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)
    mail = channel(http, f"{{host: 127.0.0.1, port: {port}, security: none}}")
    for _attempt in (1, 2):
        assert (await mail.attempt(message(mail.action, traits=TRAITS))).ok
    assert mailbox.mail(0)["Message-ID"] == mailbox.mail(1)["Message-ID"] == f"<{FIRE_ID}.mail@shop.example>"


async def test_to_from_a_template_and_an_html_only_mail(smtp_server: Any, http: httpx.AsyncClient) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)
    yaml = f"""\
  mail:
    type: email
    smtp: {{host: 127.0.0.1, port: {port}, security: none}}
    from: hello@shop.example
    to: "{{{{ user.traits.name }}}} <{{{{ user.traits.work_email }}}}>"
    subject: Hello
    html: "<h1>Hello {{{{ user.traits.name }}}}</h1>"
"""
    mail = EmailChannel(action(yaml, "mail"), http)
    outcome = await mail.attempt(message(mail.action, traits={"name": "Bo", "work_email": "bo@work.example"}))
    assert outcome.ok, outcome.error
    got = mailbox.mail()
    assert mailbox.received[0][0].rcpt_tos == ["bo@work.example"]
    assert got["To"] == "Bo <bo@work.example>"
    assert got.get_content_type() == "text/html"
    assert lines(got) == "<h1>Hello Bo</h1>\n"


async def test_a_user_without_an_email_fails_for_good_without_connecting(
    smtp_server: Any, http: httpx.AsyncClient
) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)
    mail = channel(http, f"{{host: 127.0.0.1, port: {port}, security: none}}")
    outcome = await mail.attempt(message(mail.action, traits={"name": "Ada"}))
    assert not outcome.ok and outcome.permanent
    assert outcome.error == (
        "user 'u1' has no email trait (traits.email); send an identify with it, or set to: on the action"
    )
    assert mailbox.received == []


@pytest.mark.parametrize(
    ("email_trait", "error"),
    [
        ("ada@example.com\r\nBcc: eve@example.com", "the user's email trait must be one email address"),
        ("ada@example.com, eve@example.com", "the user's email trait must be one email address"),
        ("ada at example.com", "the user's email trait is not an email address"),
    ],
)
async def test_an_email_trait_cannot_add_recipients(
    smtp_server: Any, http: httpx.AsyncClient, email_trait: str, error: str
) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)
    mail = channel(http, f"{{host: 127.0.0.1, port: {port}, security: none}}")
    outcome = await mail.attempt(message(mail.action, traits={"email": email_trait, "name": "Ada"}))
    assert outcome.permanent and (outcome.error or "").startswith(error)
    assert mailbox.received == []


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
async def test_starttls_with_a_self_signed_certificate_and_auth(
    smtp_server: Any, http: httpx.AsyncClient, certificate: Certificate, mechanism: str
) -> None:
    mailbox = Mailbox()
    other = "PLAIN" if mechanism == "LOGIN" else "LOGIN"
    port = smtp_server(
        mailbox,
        tls_context=certificate.server_context(),
        require_starttls=True,
        authenticator=mailbox.authenticate,
        auth_required=True,
        auth_exclude_mechanism=[other],
    )
    smtp = (
        f"{{host: 127.0.0.1, port: {port}, security: starttls, username: '{USER}', password: '${{SMTP_PASSWORD}}',"
        f" ca_file: '{certificate.cert}'}}"
    )
    mail = channel(http, smtp, environ={"SMTP_PASSWORD": PASSWORD})
    outcome = await mail.attempt(message(mail.action, traits=TRAITS))
    assert outcome.ok, outcome.error
    _envelope, session = mailbox.received[0]
    assert session.ssl is not None  # the mail travelled inside TLS
    assert session.authenticated and mailbox.mechanisms == [mechanism]
    assert mailbox.mail()["X-Tripwire-Fire"] == FIRE_ID


async def test_an_untrusted_certificate_is_refused(
    smtp_server: Any, http: httpx.AsyncClient, certificate: Certificate
) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox, tls_context=certificate.server_context(), require_starttls=True)
    mail = channel(http, f"{{host: 127.0.0.1, port: {port}, security: starttls}}")
    outcome = await mail.attempt(message(mail.action, traits=TRAITS))
    assert not outcome.ok
    assert not outcome.permanent
    assert outcome.error == (
        "the certificate of 127.0.0.1 is not trusted (self-signed certificate); if it is signed by your own CA,"
        " set smtp.ca_file to that CA's PEM file"
    )
    assert mailbox.received == []


async def test_a_wrong_password_fails_for_good(
    smtp_server: Any, http: httpx.AsyncClient, certificate: Certificate
) -> None:
    mailbox = Mailbox()
    port = smtp_server(
        mailbox, tls_context=certificate.server_context(), authenticator=mailbox.authenticate, auth_required=True
    )
    smtp = (
        f"{{host: 127.0.0.1, port: {port}, security: starttls, username: '{USER}', password: wrong,"
        f" ca_file: '{certificate.cert}'}}"
    )
    mail = channel(http, smtp)
    outcome = await mail.attempt(message(mail.action, traits=TRAITS))
    assert not outcome.ok and outcome.permanent and outcome.status == 535
    assert "SMTPAuthenticationError" in (outcome.error or "")


async def test_implicit_tls(smtp_server: Any, http: httpx.AsyncClient, certificate: Certificate) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox, ssl_context=certificate.server_context())
    mail = channel(http, f"{{host: 127.0.0.1, port: {port}, security: tls, ca_file: '{certificate.cert}'}}")
    outcome = await mail.attempt(message(mail.action, traits=TRAITS))
    assert outcome.ok, outcome.error
    assert mailbox.mail()["Message-ID"] == f"<{FIRE_ID}.mail@shop.example>"


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("550 5.1.1 No such user here", True), ("451 4.3.0 Mailbox busy, try again later", False)],
)
async def test_a_5xx_reply_is_permanent_and_a_4xx_reply_is_retried(
    smtp_server: Any, http: httpx.AsyncClient, reply: str, permanent: bool
) -> None:
    mailbox = Mailbox(refuse=reply)
    port = smtp_server(mailbox)
    mail = channel(http, f"{{host: 127.0.0.1, port: {port}, security: none}}")
    outcome = await mail.attempt(message(mail.action, traits=TRAITS))
    assert not outcome.ok and outcome.permanent is permanent
    assert outcome.status == int(reply[:3])
    assert reply[4:] in (outcome.error or "") and "ada@example.com" in (outcome.error or "")


async def test_no_server_listening_is_retried(http: httpx.AsyncClient) -> None:
    mail = channel(http, f"{{host: 127.0.0.1, port: {free_port()}, security: none}}")
    outcome = await mail.attempt(message(mail.action, traits=TRAITS))
    assert not outcome.ok and not outcome.permanent
    assert "SMTPConnectError" in (outcome.error or "")


async def test_smtp_timeout_bounds_each_step_of_the_conversation(http: httpx.AsyncClient) -> None:
    """A server that accepts the connection and never greets: smtp.timeout ends the wait, not the attempt's."""
    import asyncio
    import time

    silent: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # kept open, never a word

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mail = channel(http, f"{{host: 127.0.0.1, port: {port}, security: none, timeout: 300ms}}", "    timeout: 10s\n")
    started = time.monotonic()
    try:
        outcome = await mail.attempt(message(mail.action, traits=TRAITS))
    finally:
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()
    assert not outcome.ok and not outcome.permanent
    assert "Timeout" in (outcome.error or "") and time.monotonic() - started < 3
