"""A template that fails on a user's data is one failed attempt of that delivery, never a loop.

The bounds of a render (sizes, steps, output) from a table; then end to end through the
service, the dispatcher and a real receiver: the failing delivery is dead after one
recorded attempt, and deliveries beside it still go out.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from channel_kit import action, message
from receiver import receiver
from test_dispatcher import START, Clock, rules_text, start
from tripwire.actions.base import Channel, Message, Outcome
from tripwire.rules import ActionConfig
from tripwire.rules.templates import MAX_OUTPUT, TemplateError, compile_template, render


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


DATA = {"user": {"id": "u1", "traits": {"n": "x", "big": 10**9, "points": 2_000_000}}}


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{{ user.traits.n + 1 }}", 'line 1 of the template: TypeError: can only concatenate str (not "int") to str'),
        ("\n\n{{ 1 // 0 }}", "line 3 of the template: ZeroDivisionError"),
        ("{{ range(10**9) | list }}", "a range of 1,000,000,000 is over the template limit of 100,000"),
        ("{% for i in range(user.traits.big) %}{% endfor %}", "a range of 1,000,000,000 is over"),
        ('{{ "x" * user.traits.big }}', "a repetition of 1,000,000,000 is over"),
        ("{{ [0] * user.traits.big }}", "a repetition of 1,000,000,000 is over"),
        ("{{ 2 ** user.traits.big }}", "too large a number"),
        ('{{ "x" | center(user.traits.big) }}', "the center filter's size of 1,000,000,000 is over"),
        ('{{ "x" | indent(user.traits.big, true) }}', "the indent filter's size"),
        ('{{ "x".ljust(user.traits.big) }}', "the size given to ljust"),
        ('{{ "{:>{}}".format("x", user.traits.big) }}', "a width given to a format"),
        ('{{ "%*s" % (user.traits.big, "x") }}', "a width given to a format"),
        ('{{ "%*s" | format(user.traits.big, "x") }}', "a width given to a format"),
        ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "steps"),
        ("{% for i in range(99999) %}{{ '%030d' % i }}{% endfor %}", f"more than {MAX_OUTPUT:,} characters"),
        ("{{ user.traits.missing }}", "has no attribute 'missing'"),
    ],
)
def test_a_template_that_cannot_render_this_data_is_a_template_error(template: str, error: str) -> None:
    started = time.perf_counter()
    with pytest.raises(TemplateError) as caught:
        render(compile_template(template), DATA)
    assert error in str(caught.value)
    assert time.perf_counter() - started < 5  # bounded: refused before the work, or cut off by the budget


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ('{{ "{} points".format(user.traits.points) }}', "2000000 points"),  # a big number as a value is fine
        ('{{ "%d" % user.traits.points }}', "2000000"),
        ("{{ range(3) | list }} {{ range(3) | reverse | list }} {{ range(5) | length }}", "[0, 1, 2] [2, 1, 0] 5"),
        ('{{ "ab" * 3 }} {{ 2 ** 10 }} {{ "x" | center(5) }}', "ababab 1024   x  "),
    ],
)
def test_ordinary_templates_render_within_the_bounds(template: str, rendered: str) -> None:
    assert render(compile_template(template), DATA) == rendered


@pytest.mark.parametrize(
    "template",
    [
        "{% if x %}" * 2000 + "y" + "{% endif %}" * 2000,  # Jinja's parser recurses per level
        "{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}",
        "{{ " + "[" * 2000 + "]" * 2000 + " }}",
        "{{ x" + " | e" * 2000 + " }}",
        "{{ " + " + ".join(["1"] * 2000) + " }}",
        "{% for a in b %}" * 30 + "{% endfor %}" * 30,  # Python's compiler: too many statically nested blocks
        "{% if x %}" * 150 + "{% endif %}" * 150,  # Python's compiler: too many levels of indentation
    ],
    ids=["if", "parentheses", "lists", "filters", "operators", "for", "indentation"],
)
def test_a_template_nested_too_deeply_to_compile_is_a_template_error(template: str) -> None:
    """It was a RecursionError (or a SyntaxError of the generated code), a traceback of `tripwire check`."""
    with pytest.raises(TemplateError, match=r"^the template is too deeply nested to compile"):
        compile_template(template)


def test_templates_nested_as_people_write_them_compile_and_render() -> None:
    template = "{% for e in events %}" * 3 + "{% if e %}" * 10 + "{{ ((((1 + 2)))) }}" + "{% endif %}" * 10
    assert render(compile_template(template + "{% endfor %}" * 3), {"events": [1]}) == "3"


def test_a_template_error_names_the_field_and_fails_the_attempt_for_good() -> None:
    config = action("  hook: {type: webhook, url: 'https://h.example.com', body: '{{ user.traits.n + 1 }}'}\n", "hook")
    with pytest.raises(TemplateError, match=r"^body: line 1 of the template: TypeError"):
        message(config, traits={"n": "x"}).prepare()


async def test_a_failing_template_is_one_recorded_attempt_and_the_delivery_is_dead(
    tmp_path: Path, clock: Clock
) -> None:
    """It was 'internal error; retrying' forever: no attempt counted, max_attempts ignored."""
    extra = "    body: '{\"n\": {{ user.traits.n + 1 }}}'\n"
    with receiver() as rx:
        async with start(tmp_path, rules_text(rx.url, action_extra=extra), clock) as h:
            await h.buy("bad", {"n": "x"})
            await h.buy("good", {"n": 41})
            await h.until(lambda: sorted(s for s, _ in h.statuses()) == ["dead", "delivered"])
            await asyncio.sleep(0.3)  # a dispatcher in a retry loop would add attempts meanwhile
            clock.now += 3600
            await asyncio.sleep(0.3)
            dead = h.outbox.find(status="dead")[0]
            attempts = h.outbox.attempts(dead.id)
    assert [json.loads(r.body) for r in rx.requests] == [{"n": 42}]
    assert dead.user_id == "bad" and dead.attempts == 1
    assert (dead.reason or "").startswith("permanent failure: template body: line 1 of the template: TypeError")
    [attempt] = attempts
    assert attempt.outcome == "failed" and attempt.http_status is None
    assert "can only concatenate str" in (attempt.error or "")


async def test_a_resource_hungry_template_is_refused_without_stalling_the_others(tmp_path: Path, clock: Clock) -> None:
    extra = "    body: '{\"n\": {{ range(10**9) | length }}}'\n"
    with receiver() as rx:
        async with start(tmp_path, rules_text(rx.url, action_extra=extra), clock) as h:
            await h.buy("u1")
            await h.until(lambda: h.statuses() and h.statuses()[0][0] == "dead")
            assert h.attempts_recorded() == 1
    assert "a range of 1,000,000,000 is over the template limit" in (h.statuses()[0][1] or "")
    assert rx.requests == []


class Exploding(Channel):
    """A channel with a bug: every send raises what no channel is supposed to raise."""

    type = "webhook"

    async def send(self, message: Message) -> Outcome:
        raise KeyError("surprise")


async def test_an_unexpected_channel_error_is_an_attempt_counted_against_max_attempts(
    tmp_path: Path, clock: Clock
) -> None:
    def exploding(config: ActionConfig, http: httpx.AsyncClient) -> Channel:
        return Exploding(config, http)

    with receiver() as rx:
        async with start(tmp_path, rules_text(rx.url), clock, channel=exploding) as h:
            await h.buy("u1")
            for n in (1, 2, 3):  # max_attempts: 3
                await h.until(lambda n=n: h.attempts_recorded() == n)  # type: ignore[misc]
                clock.now += 3600
            await h.until(lambda: h.statuses()[0][0] == "dead")
            await asyncio.sleep(0.2)
            assert h.attempts_recorded() == 3
    reason = h.statuses()[0][1] or ""
    assert reason == "gave up after 3 attempts: unexpected KeyError in the webhook channel: 'surprise'"
