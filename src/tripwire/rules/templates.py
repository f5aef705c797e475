"""Message templates: Jinja2 in its sandbox, so a rules file cannot reach into the process.

The data a template renders is hostile (traits and events come from users' devices), so
a render is bounded: sizes a template asks for (`range(n)`, `"x" * n`, `center(n)`, ...)
are capped at MAX_SIZE, each render has a budget of MAX_STEPS steps (lookups, calls,
operators, loop items of `range`, output pieces), its output is capped at MAX_OUTPUT
characters, and any failure on the data is a TemplateError naming the template line.
A template nested too deeply to compile is a TemplateError too, never a RecursionError.
"""

from __future__ import annotations

import contextvars
import functools
import math
import string
import types
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["MAX_OUTPUT", "MAX_SIZE", "MAX_STEPS", "TemplateError", "compile_template", "render"]

MAX_OUTPUT = 1_000_000  # characters of one rendered field
MAX_SIZE = 100_000  # the largest size a template may ask for: a range, a repetition, a padding
MAX_STEPS = 1_000_000  # lookups, calls, operators, range items and output pieces of one render
_TOO_DEEP = "the template is too deeply nested to compile (blocks, brackets or filters inside one another); flatten it"
_POWER_BITS = 4_096  # the largest integer `**` may build, in bits
# str methods and filters whose integer arguments are sizes of what they build
_SIZING_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})
_SIZING_FILTERS = ("center", "indent", "wordwrap", "batch", "slice", "truncate")


class TemplateError(Exception):
    """A template that does not compile or cannot render; the message says where and why."""


class _Budget:
    """The steps left to one render."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_STEPS


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _step(count: int = 1) -> None:
    budget = _budget.get()
    if budget is None:  # a template evaluated outside `render` (Jinja's own constant folding)
        return
    budget.left -= count
    if budget.left < 0:
        raise TemplateError(f"the template took more than {MAX_STEPS:,} steps; simplify its loops")


def _check_size(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise TemplateError(f"{what} of {size:,} is over the template limit of {MAX_SIZE:,}")


class _Range:
    """`range` for templates: at most MAX_SIZE items, each one a step of the render's budget."""

    def __init__(self, *args: int) -> None:
        self.inner = range(*args)
        _check_size(len(self.inner), "a range")

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[int]:
        for item in self.inner:
            _step()
            yield item

    def __reversed__(self) -> Iterator[int]:
        for item in reversed(self.inner):
            _step()
            yield item

    def __getitem__(self, index: int) -> int:
        return self.inner[index]


def _check_format(fmt: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Integers that a format string takes as widths (`%*s`, `{:{}}`) are sizes too."""
    if not isinstance(fmt, str):
        return
    try:
        nested = "*" in fmt or any(spec and "{" in spec for _, _, spec, _ in string.Formatter().parse(fmt))
    except ValueError:  # not a {}-format; Python reports it when formatting
        nested = "*" in fmt
    if nested:
        for value in _flat(args, kwargs):
            if isinstance(value, int):
                _check_size(abs(value), "a width given to a format")


def _flat(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    values = [*args, *kwargs.values()]
    for value in list(values):
        if isinstance(value, tuple | list):  # "%*s" % (n, "x") passes its arguments as one tuple
            values.extend(value)
        elif isinstance(value, dict):
            values.extend(value.values())
    return values


def _sized(what: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` with every integer argument checked as a size (it keeps Jinja's pass_* marks)."""

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool):
                _check_size(abs(value), what)
        return function(*args, **kwargs)

    return checked


class _BoundedSandbox(SandboxedEnvironment):
    """The sandbox with a step budget on every lookup, call and operator, and sizes checked."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=True)
        self.globals["range"] = _Range
        for name in _SIZING_FILTERS:
            self.filters[name] = _sized(f"the {name} filter's size", self.filters[name])
        plain_format = self.filters["format"]

        @functools.wraps(plain_format)
        def format_filter(value: Any, *args: Any, **kwargs: Any) -> Any:
            _check_format(value, args, kwargs)
            return plain_format(value, *args, **kwargs)

        self.filters["format"] = format_filter

    def getattr(self, obj: Any, attribute: str) -> Any:
        _step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _step()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # Jinja's own signature
        _step()
        # the sandbox hands out str.format wrapped; the method and its string are underneath
        method = getattr(__obj, "__wrapped__", __obj)
        if isinstance(method, types.BuiltinMethodType) and isinstance(method.__self__, str):
            if method.__name__ in _SIZING_METHODS:
                for value in (*args, *kwargs.values()):
                    if isinstance(value, int):
                        _check_size(abs(value), f"the size given to {method.__name__}")
            elif method.__name__ in ("format", "format_map"):
                _check_format(method.__self__, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _step()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple | bytes) and isinstance(times, int):
                    _check_size(len(seq) * times, "a repetition")
        elif operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _step(min(len(left) + len(right), MAX_OUTPUT) // 1_000)  # concatenating is work in proportion
        elif operator == "%":
            _check_format(left, (right,), {})
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            bits = right * math.log2(abs(left))
            if bits > _POWER_BITS:
                raise TemplateError(f"{left} ** {right} is too large a number for a template")
        return super().call_binop(context, operator, left, right)


_PLAIN = _BoundedSandbox(autoescape=False)
_HTML = _BoundedSandbox(autoescape=True)


def compile_template(text: str, *, html: bool = False) -> Any:
    """Compile `text`; HTML templates escape what they insert."""
    env = _HTML if html else _PLAIN
    try:
        return env.from_string(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno} of the template: {exc.message}") from None
    except (RecursionError, SyntaxError):
        # Jinja parses and generates code recursively, and Python's compiler then has limits of
        # its own (about 20 nested blocks, 100 levels of indentation, 200 of parentheses)
        raise TemplateError(_TOO_DEEP) from None


def render(template: Any, context: dict[str, Any]) -> str:
    """Render a compiled template within its bounds; every failure on the data is a TemplateError."""
    token = _budget.set(_Budget())
    try:
        parts: list[str] = []
        size = 0
        for part in template.generate(context):
            _step()
            size += len(part)
            if size > MAX_OUTPUT:
                raise TemplateError(f"the template rendered more than {MAX_OUTPUT:,} characters")
            parts.append(part)
        return "".join(parts)
    except TemplateError:
        raise
    except UndefinedError as exc:
        raise TemplateError(f"{exc.message}; the template can use fire, user, events and action") from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed in a template: {exc}") from None
    except Exception as exc:  # the data does not fit the template: 1 + "x", a division by zero, ...
        line = _template_line(exc)
        where = f"line {line} of the template: " if line else ""
        raise TemplateError(f"{where}{type(exc).__name__}: {exc}") from None
    finally:
        _budget.reset(token)


def _template_line(exc: BaseException) -> int | None:
    """The template line where `exc` happened (Jinja rewrites tracebacks to template lines)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
