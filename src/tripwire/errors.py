"""The exception tree of tripwire.

    TripwireError
    ├── RulesError        a rules file is invalid; carries every problem found
    ├── EventError        one event is malformed; names the field and what to fix
    ├── DurationError     a duration string is malformed (a ValueError too)
    ├── OverloadedError   the ingest queue is full; retry after `retry_after` seconds
    ├── StoreUnavailableError  the store cannot take writes now (not started, stopping, failed)
    └── AlreadyRetriedError    a quarantined event was sent through again already

Messages say what is wrong, where, and what is allowed instead.
"""

from __future__ import annotations

from dataclasses import dataclass


class TripwireError(Exception):
    """Base of every error tripwire raises on purpose."""


@dataclass(frozen=True)
class RuleProblem:
    """One problem in a rules file, located by file, line and field path."""

    file: str
    line: int | None
    trigger: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        who = f"trigger {self.trigger!r}, " if self.trigger else ""
        return f"{where}: {who}{self.field}: {self.message}"


class RulesError(TripwireError):
    """A rules file failed validation; `problems` lists every problem at once."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the rules"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


class EventError(TripwireError):
    """An event cannot be used; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DurationError(TripwireError, ValueError):
    """A duration is not a whole number followed by a unit."""


class OverloadedError(TripwireError):
    """More events are waiting to be written than the server accepts; retry later."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"overloaded: retry after {retry_after:g}s")


class StoreUnavailableError(TripwireError):
    """The store is not taking writes (starting, stopping, or recovering from a failure)."""


class AlreadyRetriedError(TripwireError):
    """A quarantined event was retried already; retrying it again would apply it twice."""

    def __init__(self, entry: int, decision: str) -> None:
        self.entry = entry
        self.decision = decision
        super().__init__(f"quarantined event {entry} was sent through again already (decided {decision})")


class NotRetryableError(TripwireError):
    """A quarantine entry that is not an event (a user's timers set aside) cannot be sent again."""

    def __init__(self, entry: int | None, why: str) -> None:
        self.entry = entry
        what = "quarantined events" if entry is None else f"quarantine entry {entry}"
        super().__init__(f"{what} cannot be retried: {why}")


class FencedError(TripwireError):
    """A partition was claimed by another worker since this one took it: this one must write nothing more."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is owned by another worker now; this one stops writing it")
