"""Message templates: Jinja2 in its sandbox, so a rules file cannot reach into the process."""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["TemplateError", "compile_template", "render"]


class TemplateError(Exception):
    """A template that does not compile or cannot render; the message says where and why."""


_PLAIN = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_HTML = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)


def compile_template(text: str, *, html: bool = False) -> Any:
    """Compile `text`; HTML templates escape what they insert."""
    env = _HTML if html else _PLAIN
    try:
        return env.from_string(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno} of the template: {exc.message}") from None


def render(template: Any, context: dict[str, Any]) -> str:
    """Render a compiled template; a missing variable or a forbidden access is a TemplateError."""
    try:
        return str(template.render(context))
    except UndefinedError as exc:
        raise TemplateError(f"{exc.message}; the template can use fire, user, events and action") from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed in a template: {exc}") from None
