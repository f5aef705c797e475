"""Email over SMTP (aiosmtplib): a text part, an HTML part (autoescaped), or both.

SMTP has no idempotency key; the Message-ID is derived from the fire and the action,
so a repeat after a retry carries the same Message-ID, which mail stores and clients
use to fold duplicates. `X-Tripwire-Fire` carries the fire_id for the recipient's tools.
"""

from __future__ import annotations

import re
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, parseaddr
from typing import Any

import aiosmtplib

from tripwire import __version__
from tripwire.actions.base import Channel, Message, Outcome, PermanentError, RetryableError

_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


def message_id(fire_id: str, action_id: str, sender: str) -> str:
    """`<FIRE_ID.ACTION@DOMAIN>`, the domain of the sender; the same for every attempt of a delivery."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "tripwire"
    return f"<{fire_id}.{_MSGID_UNSAFE.sub('-', action_id)}@{_MSGID_UNSAFE.sub('-', domain)}>"


def recipients(message: Message) -> list[Address]:
    """The rendered `to`, or the user's `email` trait; a permanent failure when there is none."""
    if "to" in message.action.templates:
        rendered = message.render("to") or ""
        where = "the action's to"
    else:
        traits = message.user.get("traits") or {}
        email = traits.get("email") if isinstance(traits, dict) else None
        if not isinstance(email, str) or not email.strip():
            raise PermanentError(
                f"user {message.user.get('id')!r} has no email trait (traits.email); send an identify with it, "
                "or set to: on the action"
            )
        rendered = email
        where = "the user's email trait"
    rendered = rendered.strip()
    pairs = [(name, address) for name, address in getaddresses([rendered]) if address]
    # Traits come from the user's own device: one address, no line breaks, so nobody can add recipients.
    if "\r" in rendered or "\n" in rendered or (where != "the action's to" and len(pairs) != 1):
        raise PermanentError(f"{where} must be one email address: {rendered!r}")
    if not pairs or any("@" not in address for _name, address in pairs):
        raise PermanentError(f"{where} is not an email address: {rendered!r}")
    try:
        return [Address(display_name=name, addr_spec=address) for name, address in pairs]
    except (ValueError, IndexError) as exc:
        raise PermanentError(f"{where} is not an email address: {rendered!r} ({exc})") from None


def compose(message: Message) -> tuple[EmailMessage, list[str]]:
    """The email of one delivery, and its envelope recipients."""
    options = message.action.options
    to = recipients(message)
    text = message.render("text")
    html = message.render("html")
    subject = " ".join((message.render("subject") or "").split())  # a header holds no line breaks
    mail = EmailMessage()
    mail["From"] = options["from"]
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = message_id(message.idempotency_key, message.action.id, options["from"])
    if options.get("reply_to"):
        mail["Reply-To"] = options["reply_to"]
    mail["X-Tripwire-Fire"] = message.idempotency_key
    mail["X-Mailer"] = f"tripwire/{__version__}"
    if text is not None:
        mail.set_content(text)
        if html is not None:
            mail.add_alternative(html, subtype="html")
    else:
        mail.set_content(html or "", subtype="html")
    return mail, [a.addr_spec for a in to]


class EmailChannel(Channel):
    """Sends through the action's SMTP server: STARTTLS (default), implicit TLS, or plain."""

    type = "email"

    async def send(self, message: Message) -> Outcome:
        mail, to = compose(message)
        smtp: dict[str, Any] = self.action.options["smtp"]
        security = smtp.get("security", "starttls")
        sender = parseaddr(self.action.options["from"])[1]
        try:
            responses, reply = await aiosmtplib.send(
                mail,
                sender=sender,
                recipients=to,
                hostname=smtp["host"],
                port=smtp.get("port", 587),
                username=smtp.get("username"),
                password=smtp.get("password"),
                use_tls=security == "tls",
                start_tls=security == "starttls",
                timeout=smtp.get("timeout", 30_000) / 1000,
                cert_bundle=smtp.get("ca_file"),
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise _smtp_error(max(codes), f"recipients refused: {detail}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _smtp_error(exc.code, f"{type(exc).__name__}: {exc.code} {exc.message}") from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise PermanentError(f"the SMTP server at {smtp['host']} does not support this: {exc}") from None
        except aiosmtplib.SMTPException as exc:  # connection lost, timed out
            raise RetryableError(f"{type(exc).__name__}: {exc}") from None
        except ssl.SSLCertVerificationError as exc:
            raise RetryableError(
                f"the certificate of {smtp['host']} is not trusted ({exc.verify_message}); if it is signed by your "
                "own CA, set smtp.ca_file to that CA's PEM file"
            ) from None
        return Outcome.success(message_id=mail["Message-ID"], reply=reply, refused=sorted(responses))


def _smtp_error(code: int, text: str) -> PermanentError | RetryableError:
    """5xx replies are final; 4xx are temporary (RFC 5321 §4.2.1)."""
    if code >= 500:
        return PermanentError(f"SMTP {text}", code)
    return RetryableError(f"SMTP {text}", status=code)
