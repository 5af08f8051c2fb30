"""The history checker: pure functions over a recorded history (no I/O), in the spirit of Jepsen's checkers.

A :class:`History` holds what happened in one run, as the parts that saw it recorded it:

* ``attempts``: every attempt as a handler saw it (start, end, how it ended, the content it got);
* ``tasks``: what the producer was told (each accepted task's id, queue, max tries, whether it was signed, deleted);
* ``versions``: stored versions of the tasks (the task store's history, sourced into a recording stream);
* ``finals``: each task's final record, and whether a work item or a retry schedule is waiting for it;
* ``queue_limits``: each queue's ``max_tries`` over time (operators change it during the run);
* ``pauses`` and ``deaths``: when each handler instance was SIGSTOPped/SIGCONTed and SIGKILLed.

:func:`check` returns every :class:`Anomaly`; an empty list means the history satisfies all the invariants:

1. **overlap**: at most one live attempt per task at any instant. An attempt is live from its start until it
   replied or observed a cancel (a fence included), whichever is first; an attempt whose instance was killed ends at
   the kill. A frozen process does nothing: an attempt whose instance was SIGSTOPped and that ended within ``grace``
   of the SIGCONT (it replied or fenced itself as soon as it ran again) counts as ended at the SIGSTOP.
2. **stuck** / **stalled** / **lost**: every accepted task (not deleted) is in the store, and ends terminal or is
   waiting for a reason that holds: a retry schedule (a work item is no reason once the run has waited for it with
   every process up: such a task is ``stalled``; one with neither is ``stuck``).
3. **foreign-result**: a ``complete`` task's stored result is the reply of an attempt of that task that ran.
4. **tries**: no attempt number (nor a final ``tries``) exceeds the effective limit: the smaller of the task's
   ``max_tries`` and the queue's, where a queue change counts from ``settings_grace`` seconds after it was made
   (before that the more permissive of old and new applies). Tasks an operator retried are left out.
5. **unverified**: on a signed queue every attempt's content (id, queue, type, created, deadline, payload) is that of
   a stored or enqueued version whose signature verifies with the public key.
6. **cross-queue**: the queue a handler was told is the queue the task was enqueued on.
7. **early-retry**: after a retry reply asking for ``retry_after``, the task's next attempt does not start sooner
   (capped at the protocol's 7 days), unless a fault may have lost the reply or an operator or forged item touched
   the task.
8. **number-reused**: no attempt number runs twice (an attempt sent twice, or a count that went back).
9. **resurrected**: a task stored terminal is never stored unfinished again (unless an operator retried it or its
   id was deleted and reused).
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from jetbridge._timeutil import parse_ns

from tests.faults.history import (
    INF,
    NS,
    TERMINAL,
    Accepted,
    Anomaly,
    Attempt,
    Content,
    Final,
    History,
    attempts_from_lines,
)

__all__ = ["NS", "TERMINAL", "Accepted", "Anomaly", "Attempt", "Content", "Final", "History", "attempts_from_lines",
           "check", "summary"]

def _fmt(a: Attempt, t0: int) -> str:
    end = "-" if a.end is None else f"{(a.end - t0) / NS:.3f}s"
    return (f"attempt {a.attempt} token {a.token} on {a.instance} (queue {a.queue}) "
            f"{(a.start - t0) / NS:.3f}s..{end} {a.how or 'no end'}{' ' + a.reason if a.reason else ''}")


def live_end(a: Attempt, h: History, grace: float) -> int:
    """When attempt ``a`` stopped being live (see the module docstring)."""
    end = a.end
    if end is None:
        end = h.deaths.get(a.instance, h.ended)
    resumes = list(h.pauses.get(a.instance, []))
    death = h.deaths.get(a.instance)
    for stop, cont in resumes:
        if a.start <= stop < end and end <= cont + grace * NS:
            return stop
    if death is not None and a.end is None:  # killed while frozen: it never ran again
        frozen = [stop for stop, cont in resumes if stop <= death and cont >= death]
        if frozen:
            return max(a.start, min(frozen))
    return end


def overlaps(h: History, grace: float) -> list[Anomaly]:
    by_task: dict[str, list[Attempt]] = defaultdict(list)
    for a in h.attempts:
        by_task[a.task_id].append(a)
    t0 = h.began or min((a.start for a in h.attempts), default=0)
    found = []
    for task_id, attempts in by_task.items():
        spans = sorted(((a.start, live_end(a, h, grace), a) for a in attempts), key=lambda s: s[0])
        for i, (_s1, e1, a1) in enumerate(spans):
            for s2, e2, a2 in spans[i + 1:]:
                if s2 >= e1:
                    break
                if task_id in h.reused and a1.payload != a2.payload:
                    continue
                found.append(Anomaly("overlap", task_id, f"{_fmt(a1, t0)} overlaps {_fmt(a2, t0)} "
                                                         f"for {(min(e1, e2) - s2) / 1e6:.1f} ms"))
    return found


def unfinished(h: History) -> list[Anomaly]:
    found = []
    for task_id, acc in h.tasks.items():
        if acc.deleted or not acc.acknowledged:
            continue
        final = h.finals.get(task_id)
        if final is None:
            found.append(Anomaly("lost", task_id, f"accepted on {acc.queue} but not in the store"))
        elif final.state not in TERMINAL and not final.has_schedule:
            if final.has_item:  # the run waited for it with every process up: an item nobody takes is no reason
                found.append(Anomaly("stalled", task_id, f"{final.state} tries={final.tries}: its work item is on the "
                                                         f"queue but was not run while everything was up "
                                                         f"({final.last_err[:120]}) {final.note}".rstrip()))
            else:
                found.append(Anomaly("stuck", task_id, f"{final.state} tries={final.tries} with no work item and no "
                                                       f"retry schedule ({final.last_err[:120]})"))
    return found


def foreign_results(h: History) -> list[Anomaly]:
    replies: dict[str, list[Any]] = defaultdict(list)
    for a in h.attempts:
        if a.how == "ok" or a.result is not None:
            replies[a.task_id].append(a.result)
    found = []
    for task_id, final in h.finals.items():
        if final is None or final.state != "complete" or task_id not in h.tasks or h.tasks[task_id].deleted:
            continue
        ran = [r for r in replies.get(task_id, []) if r == final.result]
        if not ran:
            found.append(Anomaly("foreign-result", task_id, f"complete with result {final.result!r}, which no "
                                                            "attempt of the task replied"))
    return found


def _limit(limits: list[tuple[int, int]], at: int, grace_ns: int) -> float:
    """The most permissive queue limit in force at any time in [at - grace, at]."""
    in_force: list[int] = []
    for when, value in limits:
        if when <= at - grace_ns:
            in_force = [value]
        elif when <= at:
            in_force.append(value)
    if not in_force:
        return INF
    return max(INF if v <= 0 else float(v) for v in in_force)


def tries(h: History, grace: float) -> list[Anomaly]:
    found = []
    seen: set[tuple[str, int]] = set()
    for a in h.attempts:
        acc = h.tasks.get(a.task_id)
        if acc is None or (a.task_id, a.attempt) in seen or a.task_id in h.retried:
            continue
        own = INF if acc.max_tries <= 0 else float(acc.max_tries)
        limit = min(own, _limit(h.queue_limits.get(acc.queue, []), a.start, int(grace * NS)))
        if a.attempt > limit:
            seen.add((a.task_id, a.attempt))
            found.append(Anomaly("tries", a.task_id, f"attempt {a.attempt} started, over the effective limit "
                                                     f"{int(limit)} (task {acc.max_tries}, queue {acc.queue})"))
    for task_id, final in h.finals.items():
        acc = h.tasks.get(task_id)
        if final is None or acc is None or acc.deleted or task_id in h.retried:
            continue
        own = INF if acc.max_tries <= 0 else float(acc.max_tries)
        loosest = max((INF if v <= 0 else float(v) for _, v in h.queue_limits.get(acc.queue, [])), default=INF)
        limit = min(own, loosest)
        if final.tries > limit:
            found.append(Anomaly("tries", task_id, f"ended {final.state} with tries={final.tries}, over the "
                                                   f"effective limit {int(limit)}"))
    return found


def _instant(stamp: str | None) -> int | str | None:
    """A timestamp in milliseconds: the store keeps nanoseconds, a request carries milliseconds."""
    try:
        return parse_ns(stamp) // 1_000_000 if stamp else None
    except ValueError:
        return stamp


def verified(h: History, verify: Callable[[Content], bool]) -> list[Anomaly]:
    good: set[tuple[str, str, str, int | str | None, int | str | None, str]] = set()
    for v in h.versions:
        key = (v.task_id, v.queue, v.type, _instant(v.created), _instant(v.deadline), v.payload)
        if key not in good and v.signature and verify(v):
            good.add(key)
    found = []
    for a in h.attempts:
        if a.queue not in h.signed_queues and (a.task_id not in h.tasks or h.tasks[a.task_id].queue not in
                                               h.signed_queues):
            continue
        if (a.task_id, a.queue, a.type, _instant(a.created), _instant(a.deadline), a.payload) not in good:
            payload = base64.b64decode(a.payload)[:80] if a.payload else b""
            found.append(Anomaly("unverified", a.task_id, f"attempt {a.attempt} on {a.instance} got content that no "
                                                          f"valid signature covers (queue {a.queue}, payload "
                                                          f"{payload!r})"))
    return found


def reused_numbers(h: History) -> list[Anomaly]:
    """One attempt number is one attempt: two executions under one number mean an attempt was sent twice, or the
    count went back (a deleted and re-enqueued id starts again, so different payloads are different tasks)."""
    seen: dict[tuple[str, int, str], Attempt] = {}
    found = []
    for a in sorted(h.attempts, key=lambda a: a.start):
        if a.task_id in h.retried:
            continue
        key = (a.task_id, a.attempt, a.payload if a.task_id in h.reused else "")
        first = seen.setdefault(key, a)
        if first is not a:
            found.append(Anomaly("number-reused", a.task_id, f"attempt {a.attempt} ran twice: tokens {first.token} "
                                                             f"on {first.instance} and {a.token} on {a.instance}"))
    return found


def resurrections(h: History) -> list[Anomaly]:
    """A task stored in a terminal state is never stored unfinished again, unless an operator ran it again or the
    id was deleted and enqueued anew."""
    by_task: dict[str, list[Content]] = defaultdict(list)
    for v in h.versions:
        if v.seq:
            by_task[v.task_id].append(v)
    found = []
    for task_id, versions in by_task.items():
        if task_id in h.retried or task_id in h.reused:
            continue
        ended: Content | None = None
        for v in sorted(versions, key=lambda v: v.seq):
            if v.state in TERMINAL:
                ended = ended or v
            elif ended is not None:
                found.append(Anomaly("resurrected", task_id, f"stored {ended.state} (sequence {ended.seq}), then "
                                                             f"{v.state or 'new'} again (sequence {v.seq})"))
                break
    return found


def cross_queue(h: History) -> list[Anomaly]:
    found = []
    for a in h.attempts:
        acc = h.tasks.get(a.task_id)
        if acc is not None and a.queue != acc.queue and a.queue not in acc.moved_from:
            found.append(Anomaly("cross-queue", a.task_id, f"attempt {a.attempt} on {a.instance} was told queue "
                                                           f"{a.queue}; the task belongs to {acc.queue}"))
    return found


#: the longest retry_after a dispatcher honours (protocol 1.1: 7 days)
MAX_RETRY_AFTER = 604_800.0


def early_retries(h: History, exempt: frozenset[str], slack: float = 0.05) -> list[Anomaly]:
    """A retry reply that asked for ``after`` seconds is followed by the task's next attempt no sooner than that
    (capped at the protocol maximum). Tasks an operator or a forged item touched are ``exempt``."""
    by_task: dict[str, list[Attempt]] = defaultdict(list)
    for a in h.attempts:
        by_task[a.task_id].append(a)
    found = []
    for task_id, attempts in by_task.items():
        if task_id in exempt:
            continue
        attempts.sort(key=lambda a: a.start)
        for prev, nxt in zip(attempts, attempts[1:], strict=False):
            if prev.how != "retry" or not prev.after or prev.end is None or nxt.start < prev.end:
                continue  # (a next attempt that started before this one ended is an overlap, reported as such)
            due = prev.end + int((min(prev.after, MAX_RETRY_AFTER) - slack) * NS)
            if nxt.start < due and not any(prev.start - NS <= f <= nxt.start for f in h.faults):
                found.append(Anomaly("early-retry", task_id, f"attempt {prev.attempt} asked to retry after "
                                                             f"{prev.after:g}s; attempt {nxt.attempt} started "
                                                             f"{(nxt.start - prev.end) / NS:.3f}s after it"))
    return found


def check(h: History, verify: Callable[[Content], bool], *, grace: float = 3.0, settings_grace: float = 10.0,
          ) -> list[Anomaly]:
    """Every anomaly of the history (``grace``: seconds for a resumed handler to reply or fence itself;
    ``settings_grace``: for a queue limit change to reach every dispatcher, a paused one included)."""
    return (overlaps(h, grace) + unfinished(h) + foreign_results(h) + tries(h, settings_grace) + verified(h, verify)
            + cross_queue(h) + early_retries(h, h.touched) + reused_numbers(h)
            + resurrections(h))


def summary(anomalies: Iterable[Anomaly]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for a in anomalies:
        counts[a.kind] += 1
    return dict(sorted(counts.items()))
