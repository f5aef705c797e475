"""Rules compiled for the hot path: what an event of a given type and name concerns.

For each (type, event name) seen, the plan lists the triggers and guard patterns the
event may concern, with how each pattern matches it: never, always (decided by type
and name alone), or only after checking its `where`. Per event, the engine does one
dict lookup and visits only those.
"""

from __future__ import annotations

from dataclasses import dataclass

from tripwire.rules.model import ACTIVITY_TYPES, ActivityGuard, Guard, Matcher, Pattern, Rules, Trigger

COUNT, ABSENCE, INACTIVITY = 0, 1, 2
_SHAPE_CODE = {"count": COUNT, "absence": ABSENCE, "inactivity": INACTIVITY}
NEVER, ALWAYS, CHECK = 0, 1, 2


@dataclass(frozen=True, slots=True)
class GuardSlot:
    """A guard pattern whose recent matches each user keeps, `keep` of them at most."""

    pattern: Pattern
    keep: int


@dataclass(frozen=True, slots=True)
class TriggerPlan:
    index: int
    trigger: Trigger
    shape: int
    # (guard slot index, or -1 for a trait guard; the guard), in the order written
    guards: tuple[tuple[int, Guard], ...]


# (trigger plan, mode of its first pattern, mode of `unless`): `when` or `of` first
TriggerStep = tuple[TriggerPlan, int, int]
# (guard slot index, mode, how many times to keep)
GuardStep = tuple[int, int, int]


class Plan:
    """Triggers and guard patterns indexed by the (type, name) of the events they concern."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        slots: list[GuardSlot] = []
        slot_of: dict[Pattern, int] = {}
        triggers: list[TriggerPlan] = []
        for index, trigger in enumerate(rules.triggers):
            guards: list[tuple[int, Guard]] = []
            for guard in trigger.guards:
                if isinstance(guard, ActivityGuard):
                    need = 1 if guard.negated else guard.min_count
                    slot = slot_of.get(guard.pattern)
                    if slot is None:
                        slot = slot_of[guard.pattern] = len(slots)
                        slots.append(GuardSlot(guard.pattern, need))
                    elif slots[slot].keep < need:
                        slots[slot] = GuardSlot(guard.pattern, need)
                    guards.append((slot, guard))
                else:
                    guards.append((-1, guard))
            triggers.append(TriggerPlan(index, trigger, _SHAPE_CODE[trigger.shape], tuple(guards)))
        self.triggers = tuple(triggers)
        self.guard_slots = tuple(slots)
        self._steps: dict[tuple[str, str | None], tuple[tuple[GuardStep, ...], tuple[TriggerStep, ...]]] = {}

    def steps(self, type_: str, name: str | None) -> tuple[tuple[GuardStep, ...], tuple[TriggerStep, ...]]:
        """The guard slots and triggers an event of this type and name concerns, in file order."""
        found = self._steps.get((type_, name))
        if found is None:
            found = self._steps[(type_, name)] = self._compute(type_, name)
        return found

    def _compute(self, type_: str, name: str | None) -> tuple[tuple[GuardStep, ...], tuple[TriggerStep, ...]]:
        guards: list[GuardStep] = []
        for g, slot in enumerate(self.guard_slots):
            mode = pattern_mode(slot.pattern, type_, name)
            if mode != NEVER:
                guards.append((g, mode, slot.keep))
        steps: list[TriggerStep] = []
        for plan in self.triggers:
            trigger = plan.trigger
            if plan.shape == INACTIVITY:
                if type_ not in ACTIVITY_TYPES:
                    continue
                first = ALWAYS if trigger.of is None else pattern_mode(trigger.of, type_, name)
                second = NEVER
            else:
                assert trigger.when is not None
                first = pattern_mode(trigger.when, type_, name)
                second = pattern_mode(trigger.unless, type_, name) if trigger.unless is not None else NEVER
            if first != NEVER or second != NEVER:
                steps.append((plan, first, second))
        return tuple(guards), tuple(steps)


def _matcher_mode(matcher: Matcher, type_: str, name: str | None) -> int:
    if matcher.names is not None and name not in matcher.names:
        return NEVER
    if matcher.types is not None and type_ not in matcher.types:
        return NEVER
    return ALWAYS if matcher.where is None else CHECK


def pattern_mode(pattern: Pattern, type_: str, name: str | None) -> int:
    """Whether `pattern` matches events of this type and name: NEVER, ALWAYS, or CHECK its where."""
    if pattern.activity_only and type_ not in ACTIVITY_TYPES:
        return NEVER
    modes = {_matcher_mode(m, type_, name) for m in pattern.matchers}
    if ALWAYS in modes:
        return ALWAYS
    return CHECK if CHECK in modes else NEVER
