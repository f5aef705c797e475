"""Compiled rules: immutable value objects the engine runs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from tripwire.rules.where import Getter, Predicate

_encode_sorted = msgspec.json.Encoder(order="sorted").encode
_NOT_DECISIVE = frozenset({"description", "actions", "holdout", "goal"})

ACTIVITY_TYPES = frozenset({"track", "page", "screen"})
EVENT_TYPES = frozenset({"track", "page", "screen", "identify", "alias", "group"})

Shape = Literal["count", "absence", "inactivity"]


@dataclass(frozen=True, slots=True)
class Matcher:
    """One event pattern: names (of `event`), types and a where predicate, all optional."""

    names: frozenset[str] | None = None
    types: frozenset[str] | None = None
    where: Predicate | None = None

    def matches(self, type_: str, name: str | None, raw: dict[str, Any]) -> bool:
        if self.names is not None and name not in self.names:
            return False
        if self.types is not None and type_ not in self.types:
            return False
        return self.where is None or self.where(raw)


@dataclass(frozen=True, slots=True)
class Pattern:
    """Any of several matchers, as `when`, `unless`, `of`, `did` and `did_not` take."""

    matchers: tuple[Matcher, ...]
    activity_only: bool = False
    text: str = ""

    @property
    def names(self) -> frozenset[str] | None:
        """The event names this pattern can match, or None when it may match any."""
        names: set[str] = set()
        for matcher in self.matchers:
            if matcher.names is None:
                return None
            names |= matcher.names
        return frozenset(names)

    def matches(self, type_: str, name: str | None, raw: dict[str, Any]) -> bool:
        if self.activity_only and type_ not in ACTIVITY_TYPES:
            return False
        return any(m.matches(type_, name, raw) for m in self.matchers)


@dataclass(frozen=True, slots=True)
class TraitGuard:
    """`{trait: PATH, <operator>: VALUE}` on the user's merged traits."""

    path: str
    predicate: Predicate
    text: str


@dataclass(frozen=True, slots=True)
class ActivityGuard:
    """`did` (at least `min_count`) or `did_not` (none) in `[fire_time - within, fire_time]`."""

    pattern: Pattern
    within: int
    min_count: int
    negated: bool
    text: str


Guard = TraitGuard | ActivityGuard


@dataclass(frozen=True, slots=True)
class Goal:
    """An event whose occurrence within `within` after a fire counts as a conversion."""

    pattern: Pattern
    within: int


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most `max` deliveries to a user per `per` ms, on one channel or (None) all."""

    max: int
    per: int
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times (minutes after midnight) between which deliveries on `channels` wait."""

    start: int
    end: int
    channels: frozenset[str]
    default_timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class ActionConfig:
    """One entry of the `actions` section, validated, with environment variables filled in."""

    id: str
    type: str
    options: dict[str, Any] = field(repr=False)
    templates: dict[str, Any] = field(repr=False, compare=False)
    max_attempts: int = 10
    timeout: int = 10_000
    concurrency: int = 4
    rate_limit: tuple[int, int] | None = None
    line: int | None = None

    def __repr__(self) -> str:  # options may hold secrets
        return f"ActionConfig(id={self.id!r}, type={self.type!r})"


@dataclass(frozen=True, slots=True)
class Trigger:
    """One trigger of the rules file, compiled."""

    id: str
    shape: Shape
    when: Pattern | None = None
    unless: Pattern | None = None
    of: Pattern | None = None
    count: int = 1
    within: int | None = None
    inactive: int = 0
    restart: bool = False
    key: str | None = None
    key_get: Getter | None = None
    cooldown: int = 0
    guards: tuple[Guard, ...] = ()
    description: str | None = None
    actions: tuple[str, ...] = ()
    holdout: float = 0.0
    goal: Goal | None = None
    line: int | None = None
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def fingerprint(self) -> str:
        """Identifies what the trigger decides; saved state is kept only while it is unchanged.

        Its description, actions and delivery settings do not count.
        """
        decisive = {k: v for k, v in self.source.items() if k not in _NOT_DECISIVE}
        return hashlib.blake2b(_encode_sorted(decisive), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Settings:
    """The `settings` section; durations in milliseconds."""

    allowed_lateness: int = 5_000
    # Client clocks within this of the server's keep their timestamps (SPEC §1).
    clock_skew_tolerance: int = 2_000
    # After a restart, how long the live watermark waits for SDKs to resend.
    restart_grace: int = 60_000
    dedup_window: int = 7 * 86_400_000
    frequency_caps: tuple[FrequencyCap, ...] = ()
    quiet_hours: QuietHours | None = None
    # The cluster's Kafka topic and consumer group, when the rules name them (flags and
    # TRIPWIRE_TOPIC / TRIPWIRE_GROUP come first; see tripwire.config).
    topic: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    """A validated rules file."""

    settings: Settings
    triggers: tuple[Trigger, ...]
    actions: dict[str, ActionConfig]
    filename: str = "<rules>"

    def trigger(self, trigger_id: str) -> Trigger:
        for trigger in self.triggers:
            if trigger.id == trigger_id:
                return trigger
        raise KeyError(trigger_id)
