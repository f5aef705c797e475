"""Google service-account credentials: OAuth2 access tokens by a signed JWT (RFC 7523), cached until near expiry.

The assertion is signed RS256 with the account's private key and exchanged at the
account's `token_uri` for a bearer token, as Google's own client libraries do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from tripwire.actions.base import PermanentError, RetryableError

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600
# A token this close to its expiry is renewed, so none expires on its way to the API.
REFRESH_MARGIN = 300


@dataclass(frozen=True)
class ServiceAccount:
    """The fields of a service-account key file that tripwire uses."""

    client_email: str
    private_key: str = field(repr=False)
    private_key_id: str
    token_uri: str
    project_id: str

    @classmethod
    def parse(cls, text: str) -> ServiceAccount:
        """From the key file's JSON, or from the path of the key file."""
        source = "service_account"
        if not text.lstrip().startswith("{"):
            path = Path(text)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise PermanentError(f"service_account: cannot read the key file {path}: {exc.strerror}") from None
            source = f"the key file {path}"
        try:
            data: Any = json.loads(text)
        except ValueError as exc:
            raise PermanentError(f"{source} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("type") != "service_account":
            raise PermanentError(f"{source} is not a service-account key (its type must be service_account)")
        missing = [k for k in ("client_email", "private_key", "token_uri", "project_id") if not data.get(k)]
        if missing:
            raise PermanentError(f"the service-account key lacks {', '.join(missing)}")
        return cls(
            data["client_email"], data["private_key"], data.get("private_key_id", ""), data["token_uri"],
            data["project_id"],
        )  # fmt: skip

    def assertion(self, scope: str, now: float) -> str:
        """The signed JWT that asks `token_uri` for a token with `scope`."""
        claims = {
            "iss": self.client_email,
            "sub": self.client_email,
            "scope": scope,
            "aud": self.token_uri,
            "iat": int(now),
            "exp": int(now) + ASSERTION_LIFETIME,
        }
        headers = {"kid": self.private_key_id} if self.private_key_id else None
        try:
            return jwt.encode(claims, self.private_key, algorithm="RS256", headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise PermanentError(f"cannot sign with the service account's private_key: {exc}") from None


Post = Callable[..., Awaitable[httpx.Response]]


class TokenCache:
    """Access tokens by (token_uri, account, key, scope); shared by every channel of a process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tokens: dict[tuple[str, str, str, str], tuple[str, float]] = {}

    async def token(self, account: ServiceAccount, scope: str, post: Post) -> str:
        """A valid token, fetched with `post` (the channel's guarded request) when none is cached."""
        key = (account.token_uri, account.client_email, account.private_key_id, scope)
        now = self.clock()
        cached = self._tokens.get(key)
        if cached is not None and cached[1] - REFRESH_MARGIN > now:
            return cached[0]
        form = {"grant_type": GRANT_TYPE, "assertion": account.assertion(scope, now)}
        response = await post("POST", account.token_uri, data=form, headers={"accept": "application/json"})
        try:
            answer = response.json()
            token, expires_in = str(answer["access_token"]), float(answer.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise RetryableError(f"the token endpoint {account.token_uri} answered without an access_token") from None
        self._tokens[key] = (token, now + expires_in)
        return token

    def forget(self, account: ServiceAccount, scope: str) -> None:
        """Drop a token the API refused, so the next attempt fetches a new one."""
        self._tokens.pop((account.token_uri, account.client_email, account.private_key_id, scope), None)


TOKENS = TokenCache()
