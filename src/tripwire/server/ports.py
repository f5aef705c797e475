"""What the HTTP layer needs of the service that owns the engine and the store."""

from __future__ import annotations

from typing import Any, Protocol

from tripwire.events import Event
from tripwire.rules import Rules


class ServiceAPI(Protocol):
    """The service as the HTTP handlers see it; `tripwire.server.service.Service` provides it."""

    @property
    def rules(self) -> Rules: ...

    async def submit(self, events: list[Event]) -> list[str]:
        """Append the events durably; each one's decision: `accepted`, `late`, `duplicate` or
        `quarantined` (kept aside with its reason: it could not be applied or saved).

        Raises OverloadedError when the ingest queue is full, StoreUnavailableError when
        the store is not taking writes.
        """
        ...

    def now_ms(self) -> int: ...

    def ready(self) -> bool: ...

    async def reload_rules(self) -> Rules:
        """Load the rules file again; raises RulesError with every problem."""
        ...

    def triggers(self) -> list[dict[str, Any]]: ...

    def fires(
        self, *, trigger: str | None, user: str | None, since_ms: int | None, limit: int
    ) -> list[dict[str, Any]]: ...

    def user(self, uid: str) -> dict[str, Any] | None: ...

    def events(self, *, user: str | None, limit: int) -> list[dict[str, Any]]: ...

    def status(self) -> dict[str, Any]: ...

    def quarantined(self, *, limit: int, pending_only: bool) -> list[dict[str, Any]]:
        """Quarantined events newest first."""
        ...

    def quarantine_counts(self) -> tuple[int, int]:
        """(events quarantined, of which not retried yet)."""
        ...

    async def retry_quarantined(self, entry: int | None) -> list[dict[str, Any]]:
        """Send one quarantined event (or all not retried yet) through again; KeyError if unknown."""
        ...
