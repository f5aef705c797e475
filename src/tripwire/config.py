"""Deployment settings, read once at the edge, each from the first place that gives it:
a command-line flag, then a `TRIPWIRE_*` environment variable, then the rules file's
`settings`, then the default. What was chosen, and from where, is logged at start.

The addresses (Kafka, PostgreSQL) come from flags or the environment only: they belong
to a deployment, not to the rules a team keeps in its repository. The names (topic,
consumer group) may also be set in the rules, so every worker of a team agrees on them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from tripwire.errors import TripwireError
from tripwire.rules import Rules

Source = Literal["flag", "environment", "rules", "default"]
DEFAULT_TOPIC: Final = "tripwire-events"
DEFAULT_GROUP: Final = "tripwire"
DEFAULT_SCHEMA: Final = "tripwire"
ENVIRONMENT: Final = {
    "kafka": "TRIPWIRE_KAFKA",
    "topic": "TRIPWIRE_TOPIC",
    "postgres": "TRIPWIRE_POSTGRES",
    "group": "TRIPWIRE_GROUP",
    "schema": "TRIPWIRE_SCHEMA",
}


class ConfigError(TripwireError):
    """A setting is missing or unusable; names the flag and the variable that set it."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"--{name} (or {ENVIRONMENT[name]}): {message}")


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Where a cluster member's events and state live."""

    kafka: str
    topic: str
    postgres: str
    group: str
    schema: str
    sources: Mapping[str, Source]

    def described(self) -> dict[str, str]:
        """Each setting's source, for the start log line (the addresses' credentials left out)."""
        return {name: self.sources[name] for name in ENVIRONMENT}


def cluster_config(
    flags: Mapping[str, str | None], rules: Rules, environ: Mapping[str, str] | None = None
) -> ClusterConfig:
    """The cluster settings from `flags` (None where not given), the environment and `rules`."""
    env = os.environ if environ is None else environ
    from_rules: dict[str, str | None] = {"topic": rules.settings.topic, "group": rules.settings.group}
    defaults: dict[str, str | None] = {"topic": DEFAULT_TOPIC, "group": DEFAULT_GROUP, "schema": DEFAULT_SCHEMA}
    values: dict[str, str] = {}
    sources: dict[str, Source] = {}
    for name, variable in ENVIRONMENT.items():
        candidates: list[tuple[Source, str | None]] = [
            ("flag", flags.get(name)),
            ("environment", env.get(variable) or None),
            ("rules", from_rules.get(name)),
            ("default", defaults.get(name)),
        ]
        found = next(((source, value) for source, value in candidates if value is not None), None)
        if found is None:
            raise ConfigError(name, "required; give the flag or set the variable")
        sources[name], value = found
        if not value.strip():
            raise ConfigError(name, "is empty")
        values[name] = value
    if not values["postgres"].startswith(("postgresql://", "postgres://")):
        raise ConfigError("postgres", "expected a postgresql:// connection string")
    return ClusterConfig(**values, sources=sources)
