"""The task state machine, proved with hypothesis: every path ends in a terminal state, only terminal states
finalise an item, and attempts are counted when they start and never exceed the limit."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from jetbridge._task import TaskRecord, TaskState, new_task
from jetbridge._timeutil import NS

from bridge.policy import FixedPolicy
from bridge.states import AttemptOutcome, ItemAction, Limits, apply, max_attempts, on_delivery, on_outcome

NOW = 1_800_000_000 * NS
RETRYABLE = ["retry", "protocol_error", "timeout", "lost"]
OUTCOMES = RETRYABLE + ["complete", "terminate", "no_handler", "deadline", "shutdown", "result_too_large", "cancelled"]


def task(max_tries: int = 3, deadline: int | None = None) -> TaskRecord:
    return new_task(task_id="t1", task_type="x", queue="q", payload=b"{}", content_type="application/json",
                    max_tries=max_tries, created_ns=NOW, deadline_ns=deadline)


def test_max_attempts_takes_the_smaller_positive_limit() -> None:
    assert max_attempts(task(5), Limits(queue_max_tries=3)) == 3
    assert max_attempts(task(2), Limits(queue_max_tries=-1)) == 2
    assert max_attempts(task(0), Limits(queue_max_tries=-1)) == 0
    assert max_attempts(task(0), Limits(queue_max_tries=4)) == 4


def test_delivery_activates_and_counts_the_attempt() -> None:
    d = on_delivery(task(), NOW, Limits())
    assert d.action is ItemAction.RUN and d.state is TaskState.ACTIVE and d.tries_delta == 1
    assert apply(task(), d, NOW).tries == 1


def test_redelivered_active_task_is_taken_over_with_the_interruption_recorded() -> None:
    t = apply(task(max_tries=1), on_delivery(task(max_tries=1), NOW, Limits()), NOW)
    d = on_delivery(t, NOW + NS, Limits())
    assert d.state is TaskState.EXPIRED and d.action is ItemAction.ACK
    assert "interrupted" in (d.last_err or "") and d.last_err_code == "interrupted"


def test_past_deadline_expires_without_an_attempt() -> None:
    d = on_delivery(task(deadline=NOW - 1), NOW, Limits())
    assert (d.state, d.action, d.tries_delta) == (TaskState.EXPIRED, ItemAction.ACK, 0)


def test_retry_after_longer_than_the_deadline_expires_now() -> None:
    t = apply(task(deadline=NOW + 2 * NS), on_delivery(task(deadline=NOW + 2 * NS), NOW, Limits()), NOW)
    d = on_outcome(t, AttemptOutcome("retry", "x", "busy", retry_after=5.0), NOW, Limits())
    assert d.state is TaskState.EXPIRED and "deadline" in (d.last_err or "")


def test_short_delays_nak_long_delays_schedule() -> None:
    t = apply(task(), on_delivery(task(), NOW, Limits()), NOW)
    assert on_outcome(t, AttemptOutcome("retry", retry_after=0.2), NOW, Limits()).action is ItemAction.NAK
    assert on_outcome(t, AttemptOutcome("retry", retry_after=30), NOW, Limits()).action is ItemAction.SCHEDULE


def test_no_handler_and_shutdown_give_the_attempt_back() -> None:
    t = apply(task(), on_delivery(task(), NOW, Limits()), NOW)
    for kind in ("no_handler", "shutdown"):
        d = on_outcome(t, AttemptOutcome(kind), NOW, Limits())  # type: ignore[arg-type]
        assert d.tries_delta == -1 and apply(t, d, NOW).tries == 0


class TaskLifecycle(RuleBasedStateMachine):
    """Drive one task through random deliveries and outcomes, as the dispatcher would."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = random.Random(0)
        self.limits = Limits(queue_max_tries=self.rng.choice([-1, 2, 4]), policy=FixedPolicy("f", 2.0),
                             no_handler_delay=1.5)
        self.task = task(max_tries=3)
        self.now = NOW
        self.running = False
        self.attempts_started = 0
        self.finalised = False

    @precondition(lambda self: not self.running and not self.finalised)
    @rule(later=st.integers(min_value=0, max_value=10))
    def deliver(self, later: int) -> None:
        self.now += later * NS
        d = on_delivery(self.task, self.now, self.limits)
        if d.action is ItemAction.RUN:
            assert d.state is TaskState.ACTIVE and d.tries_delta == 1
            self.attempts_started += 1
            self.running = True
        else:
            assert d.action in (ItemAction.ACK, ItemAction.NAK)
            if d.action is ItemAction.ACK:
                self.finalised = True
        self.task = apply(self.task, d, self.now)

    @precondition(lambda self: self.running)
    @rule(kind=st.sampled_from(OUTCOMES), after=st.none() | st.floats(min_value=0, max_value=60))
    def outcome(self, kind: str, after: float | None) -> None:
        d = on_outcome(self.task, AttemptOutcome(kind, "code", "message", retry_after=after), self.now,  # type: ignore[arg-type]
                       self.limits, self.rng)
        assert d.saves, "every outcome is saved"
        self.task = apply(self.task, d, self.now)
        self.running = False
        if d.tries_delta == -1:
            self.attempts_started -= 1
        if d.action is ItemAction.ACK:
            assert self.task.task_state.terminal, "only terminal states finalise the item"
            self.finalised = True
        else:
            assert not self.task.task_state.terminal
            assert d.action in (ItemAction.NAK, ItemAction.SCHEDULE)

    @precondition(lambda self: self.running)
    @rule()
    def dispatcher_crashes(self) -> None:
        """The work item is redelivered while the task is still active: the lost attempt stays counted."""
        self.running = False

    @precondition(lambda self: self.finalised)
    @rule(later=st.integers(min_value=0, max_value=1000))
    def stray_redelivery_of_a_finished_task(self, later: int) -> None:
        """A duplicate item for a finished task (asyncjobs re-ran terminated ones): acknowledged, nothing else."""
        d = on_delivery(self.task, self.now + later * NS, self.limits)
        assert d.action is ItemAction.ACK and not d.saves

    @invariant()
    def tries_count_started_attempts(self) -> None:
        assert self.task.tries == self.attempts_started

    @invariant()
    def tries_never_exceed_the_limit(self) -> None:
        limit = max_attempts(self.task, self.limits)
        assert limit == 0 or self.task.tries <= limit

    @invariant()
    def terminal_states_are_final(self) -> None:
        if self.finalised:
            assert self.task.task_state.terminal
            assert on_delivery(self.task, self.now, self.limits).action is ItemAction.ACK


TestTaskLifecycle = TaskLifecycle.TestCase
TestTaskLifecycle.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


@settings(max_examples=300, deadline=None)
@given(kinds=st.lists(st.sampled_from(RETRYABLE), min_size=1, max_size=30), max_tries=st.integers(1, 8))
def test_retryable_failures_always_end_expired_with_the_last_error(kinds: list[str], max_tries: int) -> None:
    t, limits = task(max_tries=max_tries), Limits(policy=FixedPolicy("f", 0.0))
    for i, kind in enumerate(kinds * max_tries):
        d = on_delivery(t, NOW, limits)
        t = apply(t, d, NOW)
        if d.action is ItemAction.ACK:
            break
        t = apply(t, on_outcome(t, AttemptOutcome(kind, "c", f"error {i}"), NOW, limits), NOW)  # type: ignore[arg-type]
        if t.task_state.terminal:
            break
    assert t.task_state is TaskState.EXPIRED and t.tries == max_tries
    assert t.last_err.endswith(f"error {max_tries - 1}")
