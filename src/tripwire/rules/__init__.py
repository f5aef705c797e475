"""The rules language: load, validate and compile a YAML rules file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tripwire.errors import RulesError
from tripwire.rules.model import (
    ActionConfig,
    ActivityGuard,
    FrequencyCap,
    Goal,
    Guard,
    Matcher,
    Pattern,
    QuietHours,
    Rules,
    Settings,
    TraitGuard,
    Trigger,
)
from tripwire.rules.source import read_rules_file, read_source
from tripwire.rules.validate import build_rules

__all__ = [
    "ActionConfig",
    "ActivityGuard",
    "FrequencyCap",
    "Goal",
    "Guard",
    "Matcher",
    "Pattern",
    "QuietHours",
    "Rules",
    "Settings",
    "TraitGuard",
    "Trigger",
    "load_rules",
    "parse_rules",
]


def parse_rules(text: str, filename: str = "<rules>", environ: Mapping[str, str] | None = None) -> Rules:
    """Validate and compile rules from YAML text; raise RulesError with every problem.

    `${NAME}` in action settings is read from `environ` (default: the process environment).
    """
    source, problems = read_source(text, filename)
    rules = None if problems else build_rules(source, problems, environ)
    if rules is None:
        raise RulesError(problems)
    return rules


def load_rules(path: str | Path, environ: Mapping[str, str] | None = None) -> Rules:
    """Read, validate and compile the rules file at `path`; a file that cannot be read, is too large or
    is not UTF-8 is a RulesError located like any other problem (`tripwire check` reads it the same way)."""
    return parse_rules(read_rules_file(path), str(path), environ)
