"""The state behind ``jetbridge watch``'s live board, built from lifecycle events (pure: no I/O, no clock reads).

Per queue: tasks by their latest state and the finished rate over the last minute; the running attempts with their
progress; the most recent failures. Counts are of tasks (each task counted once, in its latest state), not events.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from jetbridge.internal import TaskStateEvent
from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table

from .durations import format_duration

FAILED = frozenset({"retry", "expired", "terminated", "no_handler", "queue_error"})
FINISHED = frozenset({"complete", "expired", "terminated"})
RATE_WINDOW = 60.0


@dataclass
class Board:
    """Latest state per task, per-queue counts, running attempts and recent failures."""

    latest: dict[str, TaskStateEvent] = field(default_factory=dict)
    finished_at: dict[str, deque[float]] = field(default_factory=dict)
    failures: deque[TaskStateEvent] = field(default_factory=lambda: deque(maxlen=8))
    depth: dict[str, tuple[int, int]] = field(default_factory=dict)  # queue -> (waiting, in flight), from the server

    def add(self, event: TaskStateEvent, now: float) -> None:
        self.latest[event.task_id] = event
        if event.state in FINISHED:
            self.finished_at.setdefault(event.queue, deque()).append(now)
        if event.state in FAILED and event.last_error:
            self.failures.append(event)
        if len(self.latest) > 50_000:  # bounded memory: forget the oldest finished tasks
            for tid in [t for t, e in self.latest.items() if e.state in FINISHED][:10_000]:
                del self.latest[tid]

    def counts(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {q: Counter() for q in self.depth}
        for e in self.latest.values():
            out.setdefault(e.queue, Counter())[e.state] += 1
        return out

    def rate(self, queue: str, now: float) -> float:
        times = self.finished_at.get(queue)
        if not times:
            return 0.0
        while times and times[0] < now - RATE_WINDOW:
            times.popleft()
        return len(times) / RATE_WINDOW

    def running(self) -> list[TaskStateEvent]:
        return [e for e in self.latest.values() if e.state == "active"]

    def render(self, now: float, elapsed: float) -> Group:
        states = ["new", "active", "retry", "no_handler", "complete", "expired", "terminated"]
        queues = Table("queue", "waiting", "in flight", *states, "finished/s",
                       title=f"queues (task counts since watch started {format_duration(round(elapsed))} ago)",
                       title_justify="left")
        for q, c in sorted(self.counts().items()):
            waiting, in_flight = self.depth.get(q, (0, 0))
            queues.add_row(q, str(waiting), str(in_flight), *(str(c.get(s, 0)) for s in states),
                           f"{self.rate(q, now):.2f}")
        running = Table("task", "type", "queue", "attempt", "progress", "", title="running attempts",
                        title_justify="left")
        running.columns[0].no_wrap = True
        for e in self.running()[:15]:
            bar = ProgressBar(total=1.0, completed=e.progress or 0.0, width=20)
            running.add_row(e.task_id, e.task_type, e.queue, str(e.tries), bar, e.progress_message)
        failures = Table("time", "task", "type", "state", "error", title="recent failures", title_justify="left")
        failures.columns[1].no_wrap = True
        for e in reversed(self.failures):
            failures.add_row(e.timestamp[11:19], e.task_id, e.task_type, e.state, e.last_error)
        return Group(queues, running, failures)
