"""The history checker's rules on small hand-made histories: each bad history must be caught, each good one pass."""

from __future__ import annotations

import base64

import pytest

from tests.faults import checker as ck
from tests.faults.history_run import content, keys, verifier

S = ck.NS
SEED, PUBLIC = keys(1)
CREATED = "2026-01-01T00:00:00.123456789Z"


def attempt(n: int, start: float, end: float | None, how: str | None = "ok", *, task: str = "t1", instance: str = "h1",
            queue: str = "Q", result: object = None, after: float | None = None, payload: str = "cA==",
            reason: str = "") -> ck.Attempt:
    return ck.Attempt(task_id=task, attempt=n, token=f"{task}-{n}-{instance}", instance=instance, queue=queue,
                      start=int(start * S), end=None if end is None else int(end * S), how=how, reason=reason,
                      result=result, after=after, created="2026-01-01T00:00:00.123Z", payload=payload)


def history(*attempts: ck.Attempt, **kw: object) -> ck.History:
    h = ck.History(attempts=list(attempts), tasks={"t1": ck.Accepted("t1", "Q", 0, True, 0)}, ended=100 * S,
                   finals={"t1": ck.Final("terminated", 0)})
    for key, value in kw.items():
        setattr(h, key, value)
    return h


def kinds(h: ck.History, **kw: float) -> list[str]:
    return [a.kind for a in ck.check(h, lambda c: True, **kw) if a.kind != "unverified"]


def test_sequential_attempts_pass() -> None:
    assert kinds(history(attempt(1, 1, 2, "retry"), attempt(2, 2.1, 3))) == []


def test_two_live_attempts_are_an_overlap_naming_both() -> None:
    found = ck.overlaps(history(attempt(1, 1, 5, "retry"), attempt(2, 3, 4), attempt(3, 6, 7)), 2.0)
    assert len(found) == 1 and "attempt 1" in found[0].detail and "attempt 2" in found[0].detail
    assert found[0].detail.endswith("for 1000.0 ms")  # 3 s .. 4 s: the later one ended first


def test_every_overlapping_pair_is_reported() -> None:
    assert len(ck.overlaps(history(attempt(1, 1, 5), attempt(2, 2, 6), attempt(3, 3, 7)), 2.0)) == 3


def test_an_observed_cancel_ends_liveness_and_a_kill_ends_an_unfinished_attempt() -> None:
    cancelled = attempt(1, 1, 2, "cancel", reason="lost")
    assert kinds(history(cancelled, attempt(2, 2.5, 3))) == []
    unfinished = attempt(1, 1, None, None, instance="h1")
    assert kinds(history(unfinished, attempt(2, 4, 5, instance="h2"), deaths={"h1": 3 * S})) == []
    assert kinds(history(unfinished, attempt(2, 4, 5, instance="h2"))) == ["overlap"]  # never killed: still live


def test_a_frozen_handler_that_fences_on_resume_counts_as_ended_at_the_freeze() -> None:
    frozen = attempt(1, 1, 10.5, "cancel", reason="lost", instance="h1")
    assert kinds(history(frozen, attempt(2, 6, 7, instance="h2"), pauses={"h1": [(2 * S, 10 * S)]})) == []
    # a handler that went on working for long after the resume was live all along
    slow = attempt(1, 1, 15, "ok", instance="h1")
    assert kinds(history(slow, attempt(2, 6, 7, instance="h2"), pauses={"h1": [(2 * S, 10 * S)]})) == ["overlap"]


def test_a_task_neither_terminal_nor_waiting_is_stuck_and_a_missing_one_lost() -> None:
    h = history(finals={"t1": ck.Final("new", 0)})
    assert kinds(h) == ["stuck"]
    h.finals = {"t1": ck.Final("retry", 1, has_schedule=True)}
    assert kinds(h) == []
    h.finals = {"t1": ck.Final("new", 0, has_item=True)}
    assert kinds(h) == ["stalled"]
    h.finals = {"t1": None}
    assert kinds(h) == ["lost"]
    h.tasks = {"t1": ck.Accepted("t1", "Q", 0, True, 0, deleted=True)}
    assert kinds(h) == []
    h.tasks = {"t1": ck.Accepted("t1", "Q", 0, True, 0, acknowledged=False)}  # the client was told it failed
    h.finals = {"t1": ck.Final("queue_error", 0)}
    assert kinds(h) == []


def test_a_complete_result_no_attempt_replied_is_foreign() -> None:
    ran = attempt(1, 1, 2, result={"token": "a"})
    assert kinds(history(ran, finals={"t1": ck.Final("complete", 1, {"token": "a"})})) == []
    assert kinds(history(ran, finals={"t1": ck.Final("complete", 1, {"token": "b"})})) == ["foreign-result"]


def test_tries_over_the_effective_limit() -> None:
    h = history(attempt(1, 1, 2, "retry"), attempt(2, 3, 4, "retry"), attempt(3, 5, 6),
                tasks={"t1": ck.Accepted("t1", "Q", 10, True, 0)}, queue_limits={"Q": [(0, 2)]})
    assert kinds(h) == ["tries"]
    h.queue_limits = {"Q": [(0, -1)]}
    assert kinds(h) == []
    h.tasks = {"t1": ck.Accepted("t1", "Q", 2, True, 0)}
    assert kinds(h) == ["tries"]
    h.retried = frozenset({"t1"})  # an operator ran it again: the count is policy
    assert kinds(h) == []


def test_a_queue_limit_change_applies_after_the_grace() -> None:
    h = history(attempt(1, 1, 2, "retry"), attempt(2, 3, 4, "retry"), attempt(3, 5, 6),
                queue_limits={"Q": [(0, -1), (int(4.5 * S), 2)]})
    assert kinds(h, settings_grace=0.25) == ["tries"]  # attempt 3 at 5 s, the change to 2 at 4.5 s
    assert kinds(h, settings_grace=1.0) == []  # still within the grace: the old limit may apply


def test_a_handler_told_another_queue_is_cross_queue() -> None:
    assert kinds(history(attempt(1, 1, 2, queue="OTHER"))) == ["cross-queue"]
    moved = {"t1": ck.Accepted("t1", "Q", 0, True, 0, moved_from=frozenset({"OTHER"}))}
    assert kinds(history(attempt(1, 1, 2, queue="OTHER"), tasks=moved)) == []


def test_a_retry_sooner_than_asked_is_early_unless_touched_or_faulted() -> None:
    h = history(attempt(1, 1, 2, "retry", after=1e12), attempt(2, 2.01, 3))
    assert kinds(h) == ["early-retry"]
    assert kinds(history(attempt(1, 1, 2, "retry", after=0.5), attempt(2, 2.6, 3))) == []
    h.faults = [int(2.005 * S)]
    assert kinds(h) == []


@pytest.mark.parametrize("change", ["payload", "queue", "unsigned"])
def test_content_that_no_valid_signature_covers_is_unverified(change: str) -> None:
    from jetbridge import Signer
    from jetbridge._task import new_task

    doc = new_task(task_id="t1", task_type="chk:work", queue="Q", payload=b"p", content_type="application/octet-stream",
                   max_tries=3, created_ns=1_767_225_600_123_456_789, deadline_ns=None)
    doc.signature = Signer(SEED).sign(doc)
    good = attempt(1, 1, 2)
    h = history(good, versions=[content(doc)], signed_queues=frozenset({"Q"}))
    assert ck.verified(h, verifier(PUBLIC)) == []
    bad = {"payload": attempt(1, 1, 2, payload=base64.b64encode(b"q").decode()),
           "queue": attempt(1, 1, 2, queue="R"), "unsigned": good}[change]
    if change == "unsigned":
        doc.signature = ""
        h.versions = [content(doc)]
    h.attempts = [bad]
    assert [a.kind for a in ck.verified(h, verifier(PUBLIC))] == ["unverified"]


def test_attempt_lines_pair_by_token() -> None:
    lines = [{"ev": "start", "token": "x", "task_id": "t", "attempt": 1, "instance": "h", "queue": "Q", "t": 5},
             {"ev": "end", "token": "x", "t": 9, "how": "retry", "after": 1.5}]
    [a] = ck.attempts_from_lines(lines)
    assert (a.start, a.end, a.how, a.after) == (5, 9, "retry", 1.5)
    lines[1] = {"ev": "end", "token": "x", "t": 9, "how": "cancel", "reason": "lost"}
    lines.append({"ev": "reply", "token": "x", "t": 12, "result": {"late": True}})
    [a] = ck.attempts_from_lines(lines)
    assert (a.end, a.how, a.result) == (9, "cancel", {"late": True})  # live until the cancel; its late reply counts


def test_one_attempt_number_run_twice_is_reported() -> None:
    assert kinds(history(attempt(1, 1, 2, "retry", instance="h1"), attempt(1, 3, 4, instance="h2"))) == ["number-reused"]
    h = history(attempt(1, 1, 2, instance="h1"), attempt(1, 3, 4, instance="h2", payload="cQ=="), reused=frozenset({"t1"}))
    assert kinds(h) == []  # a deleted id enqueued again is another task


def test_a_terminal_task_stored_unfinished_again_is_resurrected() -> None:
    def version(state: str, seq: int) -> ck.Content:
        return ck.Content("t1", "Q", "chk:work", 3, CREATED, None, "cA==", "", state, seq)

    h = history(versions=[version("new", 1), version("active", 2), version("complete", 3), version("active", 4)])
    assert kinds(h) == ["resurrected"]
    h.versions = h.versions[:3]
    assert kinds(h) == []
    h.versions.append(version("retry", 5))
    h.retried = frozenset({"t1"})
    assert kinds(h) == []
