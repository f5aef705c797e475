"""The delivery base: what every channel shares, so each channel implements only `send`.

`Channel.attempt` owns timeouts and the mapping of every failure to retry-or-give-up;
the client it is given (`transport.delivery_client`) guards against private addresses;
the dispatcher owns retries, backoff, rate limits and the record of attempts. The
idempotency key of every delivery is its fire's `fire_id`.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
import structlog

from tripwire.actions.transport import RefusedDestinationError
from tripwire.redact import redact_text
from tripwire.rules import ActionConfig
from tripwire.rules.templates import TemplateError, render

log = structlog.get_logger("tripwire.delivery")


@dataclass(frozen=True)
class Message:
    """One delivery of one fire through one action, with what templates may use."""

    delivery_id: int
    action: ActionConfig
    fire: dict[str, Any]  # SPEC §4 fields
    user: dict[str, Any]  # {"id": ..., "traits": {...}}
    events: list[dict[str, Any]]  # the events that caused the fire, as logged
    attempt: int = 1
    rendered: dict[str, str] = field(default_factory=dict)  # by `prepare`

    @property
    def idempotency_key(self) -> str:
        return str(self.fire["fire_id"])

    def context(self) -> dict[str, Any]:
        return {"fire": self.fire, "user": self.user, "events": self.events, "action": {"id": self.action.id}}

    def prepare(self) -> None:
        """Render every template of the action now (the dispatcher does it in a worker thread)."""
        for name in self.action.templates:
            self.render(name)

    def render(self, name: str, default: str | None = None) -> str | None:
        """The action's template `name` rendered for this delivery, or `default` when not set."""
        if name in self.rendered:
            return self.rendered[name]
        template = self.action.templates.get(name)
        if template is None:
            return default
        try:
            text = self.rendered[name] = render(template, self.context())
        except TemplateError as exc:
            raise TemplateError(f"{name}: {exc}") from None
        return text


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
        """`send` within the action's timeout, with every failure, whatever it is, mapped to an Outcome."""
        seconds = self.action.timeout / 1000
        try:
            async with asyncio.timeout(seconds):
                return await self.send(message)
        except (TimeoutError, httpx.TimeoutException) as exc:
            phase = f" ({type(exc).__name__})" if isinstance(exc, httpx.TimeoutException) else ""
            return Outcome.failure(
                f"timed out after {seconds:g}s{phase}: the action's timeout; raise it if the receiver is this slow"
            )
        except PermanentError as exc:
            return Outcome.failure(str(exc), status=exc.status, permanent=True)
        except RetryableError as exc:
            return Outcome.failure(str(exc), status=exc.status, retry_after=exc.retry_after)
        except TemplateError as exc:  # the same data renders the same way: retrying cannot help
            return Outcome.failure(f"template {exc}", permanent=True)
        except RefusedDestinationError as exc:
            return Outcome.failure(str(exc), permanent=True)
        except (httpx.HTTPError, OSError) as exc:
            return Outcome.failure(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a channel's bug: one failed attempt of this delivery, counted like others
            log.exception("a channel failed unexpectedly", action=self.action.id, delivery=message.delivery_id)
            return Outcome.failure(f"unexpected {type(exc).__name__} in the {self.type} channel: {exc}")

    # -- HTTP, for the channels that speak it ---------------------------------------------

    @property
    def http_timeout(self) -> httpx.Timeout:
        """The action's timeout for each phase of a request (connect, write, read, pool)."""
        return httpx.Timeout(self.action.timeout / 1000)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """An HTTP request within the action's timeout; non-2xx answers raise."""
        kwargs.setdefault("timeout", self.http_timeout)
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
    # Masked before it is cut, so a secret at the cut cannot leave part of itself showing.
    snippet = redact_text(response.text[:4_096])[:200].replace("\n", " ")
    message = f"HTTP {status} from {response.request.url.host}: {snippet}"
    if status in RETRYABLE_STATUS or status >= 500:
        raise RetryableError(message, retry_after_seconds(response.headers.get("retry-after")), status)
    raise PermanentError(message, status)
