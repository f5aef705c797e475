"""The delivery base: what every channel shares, so each channel implements only `send`.

`Channel.attempt` owns timeouts, the mapping of failures to retry-or-give-up, and the
guard against requests to private addresses; the dispatcher owns retries, backoff,
rate limits and the record of attempts. The idempotency key of every delivery is its
fire's `fire_id`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from tripwire.rules import ActionConfig
from tripwire.rules.templates import TemplateError, render


@dataclass(frozen=True)
class Message:
    """One delivery of one fire through one action, with what templates may use."""

    delivery_id: int
    action: ActionConfig
    fire: dict[str, Any]  # SPEC §4 fields
    user: dict[str, Any]  # {"id": ..., "traits": {...}}
    events: list[dict[str, Any]]  # the events that caused the fire, as logged
    attempt: int = 1

    @property
    def idempotency_key(self) -> str:
        return str(self.fire["fire_id"])

    def context(self) -> dict[str, Any]:
        return {"fire": self.fire, "user": self.user, "events": self.events, "action": {"id": self.action.id}}

    def render(self, name: str, default: str | None = None) -> str | None:
        """The action's template `name` rendered for this delivery, or `default` when not set."""
        template = self.action.templates.get(name)
        if template is None:
            return default
        return render(template, self.context())


@dataclass
class Outcome:
    """What one attempt came to. `permanent` failures are not retried."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, status: int | None = None, **detail: Any) -> Outcome:
        return cls(True, status, detail=detail)

    @classmethod
    def failure(cls, error: str, *, status: int | None = None, permanent: bool = False,
                retry_after: float | None = None) -> Outcome:  # fmt: skip
        return cls(False, status, error, retry_after, permanent)


class PermanentError(Exception):
    """A delivery that cannot succeed by retrying (bad configuration, a rejected request)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(Exception):
    """A delivery that may succeed later; `retry_after` in seconds when the receiver said."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class Channel(ABC):
    """Base of every channel. Subclasses set `type` and implement `send`."""

    type: ClassVar[str]

    def __init__(self, action: ActionConfig, http: httpx.AsyncClient) -> None:
        self.action = action
        self.http = http

    @abstractmethod
    async def send(self, message: Message) -> Outcome:
        """Deliver `message` once. Raise PermanentError or RetryableError, or return an Outcome."""

    async def attempt(self, message: Message) -> Outcome:
        """`send` within the action's timeout, with every failure mapped to an Outcome."""
        try:
            async with asyncio.timeout(self.action.timeout / 1000):
                return await self.send(message)
        except TimeoutError:
            return Outcome.failure(f"timed out after {self.action.timeout / 1000:g}s")
        except PermanentError as exc:
            return Outcome.failure(str(exc), status=exc.status, permanent=True)
        except RetryableError as exc:
            return Outcome.failure(str(exc), status=exc.status, retry_after=exc.retry_after)
        except TemplateError as exc:
            return Outcome.failure(f"template: {exc}", permanent=True)
        except httpx.HTTPError as exc:
            return Outcome.failure(f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return Outcome.failure(f"{type(exc).__name__}: {exc}")

    # -- HTTP, for the channels that speak it ---------------------------------------------

    async def check_destination(self, url: str) -> None:
        """Refuse private, loopback and link-local destinations unless the action allows them."""
        if self.action.options.get("allow_private", False):
            return
        host = urlsplit(url).hostname or ""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise RetryableError(f"cannot resolve {host}: {exc}") from None
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
                raise PermanentError(
                    f"{host} resolves to {address}, a private address; set allow_private: true on the action "
                    "if this is intended"
                )

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """An HTTP request to a destination the action may reach; non-2xx answers raise."""
        await self.check_destination(url)
        response = await self.http.request(method, url, **kwargs)
        raise_for_status(response)
        return response


RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) in seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def raise_for_status(response: httpx.Response) -> None:
    """Map an HTTP answer: 2xx passes; 408, 425, 429 and 5xx may be retried; other 4xx may not."""
    status = response.status_code
    if 200 <= status < 300:
        return
    snippet = response.text[:200].replace("\n", " ")
    message = f"HTTP {status} from {response.request.url.host}: {snippet}"
    if status in RETRYABLE_STATUS or status >= 500:
        raise RetryableError(message, retry_after_seconds(response.headers.get("retry-after")), status)
    raise PermanentError(message, status)
