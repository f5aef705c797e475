"""The rules language: load, validate and compile a YAML rules file."""

from __future__ import annotations

from pathlib import Path

from tripwire.errors import RuleProblem, RulesError
from tripwire.rules.model import (
    ActivityGuard,
    Guard,
    Matcher,
    Pattern,
    Rules,
    Settings,
    TraitGuard,
    Trigger,
)
from tripwire.rules.source import read_source
from tripwire.rules.validate import build_rules

__all__ = [
    "ActivityGuard",
    "Guard",
    "Matcher",
    "Pattern",
    "Rules",
    "Settings",
    "TraitGuard",
    "Trigger",
    "load_rules",
    "parse_rules",
]


def parse_rules(text: str, filename: str = "<rules>") -> Rules:
    """Validate and compile rules from YAML text; raise RulesError with every problem."""
    source, problems = read_source(text, filename)
    rules = None if problems else build_rules(source, problems)
    if rules is None:
        raise RulesError(problems)
    return rules


def load_rules(path: str | Path) -> Rules:
    """Read, validate and compile the rules file at `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([RuleProblem(str(path), None, None, "(file)", f"cannot read: {exc.strerror}")]) from exc
    return parse_rules(text, str(path))
