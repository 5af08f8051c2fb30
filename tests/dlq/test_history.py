"""Attempt history: bounded whatever the number of tries, and still a task document asyncjobs can read."""

from __future__ import annotations

import json

import msgspec
from jetbridge._task import TaskRecord, decode_task, encode_task
from jetbridge._timeutil import NS, format_ns

from bridge.history import KEEP_FIRST, KEEP_LAST, MAX_MESSAGE, record_attempt, timeline
from bridge.states import AttemptOutcome, Decision, ItemAction, Limits, on_outcome

T0 = 1_700_000_000 * NS


def _task(tries: int = 1) -> TaskRecord:
    return TaskRecord(id="t1", type="email:new", queue="Q", payload=b"{}", max_tries=0, state="active",
                      created=format_ns(T0), tried=format_ns(T0), tries=tries)


def test_a_task_retried_thousands_of_times_keeps_first_and_last_attempts_and_stays_small() -> None:
    task = _task()
    outcome = AttemptOutcome("retry", "handler_error", "x" * 5000)
    for n in range(1, 5001):
        task.tries = n
        task.tried = format_ns(T0 + n * NS)
        decision = on_outcome(task, outcome, T0 + n * NS + NS // 2, Limits())
        task = record_attempt(task, outcome, decision, now_ns=T0 + n * NS + NS // 2, dispatcher="d1")
    assert task.history is not None
    numbers = [a.n for a in task.history.attempts]
    assert numbers == [1, 2, 3, *range(5001 - KEEP_LAST, 5001)]
    assert task.history.dropped == 5000 - KEEP_FIRST - KEEP_LAST
    assert all(len(a.msg) <= MAX_MESSAGE for a in task.history.attempts)
    assert task.history.attempts[-1].ms == 500 and task.history.attempts[-1].dispatcher == "d1"
    assert len(encode_task(task)) < 16_000
    lines = timeline(task)
    assert len(lines) == KEEP_FIRST + KEEP_LAST + 1 and "4980 attempts not kept" in lines[KEEP_FIRST]


def test_the_worst_case_history_stays_under_23_kb() -> None:
    task = _task()
    task.progress, task.progress_message = 0.123456789, "p" * 5000
    outcome = AttemptOutcome("retry", "c" * 500, "m" * 5000, extra={"handler": "h" * 500, "sdk": "s" * 500})
    for n in range(1, 100):
        task.tries = n
        task = record_attempt(task, outcome, Decision(ItemAction.NAK), now_ns=T0 + n * NS, dispatcher="d" * 500)
    assert task.history is not None and len(task.history.attempts) == KEEP_FIRST + KEEP_LAST
    assert len(encode_task(msgspec.structs.replace(task, progress_message=""))) < 23_000


def test_handing_a_try_back_is_not_an_attempt() -> None:
    task = _task()
    for kind in ("shutdown", "no_handler"):
        outcome = AttemptOutcome(kind)  # type: ignore[arg-type]
        assert record_attempt(task, outcome, on_outcome(task, outcome, T0, Limits()), now_ns=T0).history is None


def test_asyncjobs_members_are_untouched_and_history_round_trips() -> None:
    task = record_attempt(_task(), AttemptOutcome("complete", result=1), Decision(ItemAction.ACK), now_ns=T0 + NS,
                          dispatcher="d1")
    doc = json.loads(encode_task(task))
    assert {"id", "type", "queue", "payload", "max_tries", "state", "created", "tries"} <= doc.keys()
    assert doc["history"]["attempts"][0] == {"n": 1, "start": format_ns(T0), "end": format_ns(T0 + NS), "ms": 1000,
                                            "outcome": "complete", "dispatcher": "d1"}
    assert decode_task(encode_task(task)) == task
