"""Credentials: Segment write keys for ingest and the bearer token of the admin API.

Both are held as `Secret`, which never shows its value in `str`, `repr` or logs, and
compared in constant time so a response's timing says nothing about a near miss.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable
from typing import Final

HOW_TO_PASS_WRITE_KEY: Final = (
    "pass your write key as the HTTP Basic user name with an empty password "
    "(Authorization: Basic base64('WRITE_KEY:')), or as writeKey in the JSON body"
)
HOW_TO_PASS_ADMIN_TOKEN: Final = "send the admin token as Authorization: Bearer TOKEN"


class Secret:
    """A credential that prints as `Secret('**********')`; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise ValueError("a secret cannot be empty")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str | None) -> bool:
        """True when `candidate` equals the secret; constant time in the secret's content."""
        if candidate is None:
            return False
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would be a way to write the value somewhere without meaning to.
        raise TypeError("a Secret cannot be pickled")


def any_matches(secrets: Iterable[Secret], candidate: str | None) -> bool:
    """True when `candidate` is one of `secrets`; every secret is compared, so timing says nothing."""
    found = False
    for secret in secrets:
        found |= secret.matches(candidate)
    return found


def basic_user(authorization: str | None) -> str | None:
    """The user name of an `Authorization: Basic ...` header, None when absent or not Basic."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, _password = decoded.partition(":")
    return user or None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header, None when absent or not Bearer."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
