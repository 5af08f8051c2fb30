"""What to do next with a schedule: pure decisions, no I/O (the firing loop is :mod:`bridge.scheduler`).

Every dispatcher asks :func:`next_step` for every schedule and carries out the answer; the answer depends only on
the stored definition, the stored state, the time and whether the last task still runs, so all dispatchers agree
on it. Slots are taken strictly in order, one compare-and-set of the state per decision, and a slot's task id is
derived from the schedule's name and the slot (:func:`jetbridge._cron.slot_task_id`): a slot fires at most once
however many dispatchers race for it, and a dispatcher dying half way leaves nothing the next one cannot finish.

Rules (Temporal's, applied per slot):

* a slot fires at ``slot + jitter`` (a deterministic delay per slot);
* a slot older than the catch-up window when it is decided is *missed*: counted, never silently dropped;
* otherwise the overlap policy decides while the previous task is unfinished: ``skip`` counts it skipped,
  ``buffer_one`` holds the first such slot until that task ends (later ones are skipped), ``allow`` fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import msgspec
from jetbridge.internal import (
    CronSpec,
    ScheduleDoc,
    ScheduleState,
    format_ns,
    format_slot,
    jitter_ns,
    parse_cron,
    slot_task_id,
)

__all__ = ["CronSpec", "Step", "StepKind", "apply_step", "next_step", "parse_cron", "slot_task_id"]

#: missed slots are recorded in batches of at most this many per compare-and-set
MISS_BATCH = 10_000


class StepKind(StrEnum):
    #: nothing to do before ``at``
    WAIT = "wait"
    #: create the slot's task, then record it
    FIRE = "fire"
    #: create the held-back slot's task (buffer_one), then record it
    FIRE_BUFFERED = "fire_buffered"
    #: hold the slot until the running task ends (buffer_one)
    BUFFER = "buffer"
    #: the previous task still runs: the slot is not fired (skip, or buffer_one with a slot held already)
    SKIP = "skip"
    #: ``count`` slots up to ``slot`` are older than the catch-up window
    MISS = "miss"
    #: the schedule is paused
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    #: the slot decided (for MISS: the last of the batch); for WAIT: the slot waited for
    slot: int = 0
    #: for WAIT: when to look again (UTC ns)
    at: int = 0
    count: int = 1
    #: for MISS: the first slot of the batch (the only one a dead firer may have created a task for)
    first: int = 0


def next_step(doc: ScheduleDoc, state: ScheduleState, now: int, previous_running: bool) -> Step:
    """The next decision for a schedule at time ``now``.

    ``previous_running``: the state's ``last_task`` exists and is not finished (only asked for by the policies
    that care; pass False when there is none).
    """
    if doc.paused:
        return Step(StepKind.PAUSED)
    if state.buffered and not previous_running:
        return Step(StepKind.FIRE_BUFFERED, slot=state.buffered)
    spec = doc.spec
    cursor = max(state.cursor, doc.start_ns)
    slot = spec.next_after(cursor)
    fire_at = slot + jitter_ns(doc.name, slot, doc.jitter)
    if now < fire_at:
        return Step(StepKind.WAIT, slot=slot, at=fire_at)
    horizon = now - doc.catchup_ns
    if slot < horizon:
        slots = spec.slots(cursor, horizon - 1, MISS_BATCH)
        return Step(StepKind.MISS, slot=slots[-1], count=len(slots), first=slots[0])
    if not previous_running or doc.overlap == "allow":
        return Step(StepKind.FIRE, slot=slot)
    if doc.overlap == "buffer_one" and not state.buffered:
        return Step(StepKind.BUFFER, slot=slot)
    return Step(StepKind.SKIP, slot=slot)


def apply_step(doc: ScheduleDoc, state: ScheduleState, step: Step, now: int, task_id: str = "") -> ScheduleState:
    """The state after ``step`` was carried out (``task_id``: the task a fire created or found)."""
    changes: dict[str, object] = {}
    if step.kind is StepKind.FIRE_BUFFERED:
        changes = {"buffered": 0}
    elif step.kind in (StepKind.FIRE, StepKind.BUFFER, StepKind.SKIP, StepKind.MISS):
        changes = {"cursor": step.slot}
    if step.kind in (StepKind.FIRE, StepKind.FIRE_BUFFERED):
        changes.update(last_fire=format_ns(now), last_slot=format_slot(step.slot), last_task=task_id,
                       fires=state.fires + 1)
    elif step.kind is StepKind.BUFFER:
        changes["buffered"] = step.slot
    elif step.kind is StepKind.SKIP:
        changes["skipped"] = state.skipped + 1
    elif step.kind is StepKind.MISS:
        changes["missed"] = state.missed + step.count
    new = msgspec.structs.replace(state, **changes)
    cursor = max(new.cursor, doc.start_ns)
    return msgspec.structs.replace(new, next_fire=format_ns(doc.spec.next_after(cursor)))


def needs_previous(doc: ScheduleDoc, state: ScheduleState) -> bool:
    """Whether :func:`next_step` needs to know if the last task runs (a store read the loop can skip)."""
    return bool(state.last_task) and (doc.overlap != "allow" or bool(state.buffered))
