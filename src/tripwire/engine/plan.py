"""Rules compiled for the hot path: which triggers and guards an event name concerns."""

from __future__ import annotations

from dataclasses import dataclass

from tripwire.rules.model import ActivityGuard, Guard, Pattern, Rules, Trigger

COUNT, ABSENCE, INACTIVITY = 0, 1, 2
_SHAPE_CODE = {"count": COUNT, "absence": ABSENCE, "inactivity": INACTIVITY}


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
    # (guard slot index or -1 for a trait guard, the guard) in the order written
    guards: tuple[tuple[int, Guard], ...]


class Plan:
    """Triggers and guard patterns indexed by the event names that can concern them."""

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
        self._by_name: dict[str | None, tuple[TriggerPlan, ...]] = {}
        self._guards_by_name: dict[str | None, tuple[int, ...]] = {}

    def triggers_for(self, name: str | None) -> tuple[TriggerPlan, ...]:
        """The triggers an event with this `event` name may concern, in file order."""
        found = self._by_name.get(name)
        if found is None:
            found = self._by_name[name] = tuple(plan for plan in self.triggers if _concerns(plan.trigger, name))
        return found

    def guards_for(self, name: str | None) -> tuple[int, ...]:
        """The guard slots an activity event with this name may feed."""
        found = self._guards_by_name.get(name)
        if found is None:
            found = self._guards_by_name[name] = tuple(
                i for i, slot in enumerate(self.guard_slots) if _may_match(slot.pattern, name)
            )
        return found


def _may_match(pattern: Pattern | None, name: str | None) -> bool:
    if pattern is None:
        return False
    names = pattern.names
    return names is None or name in names


def _concerns(trigger: Trigger, name: str | None) -> bool:
    if trigger.shape == "inactivity":
        return trigger.of is None or _may_match(trigger.of, name)
    return _may_match(trigger.when, name) or _may_match(trigger.unless, name)
