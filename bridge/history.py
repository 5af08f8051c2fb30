"""A task's attempt history: pure, bounded, and invisible to asyncjobs.

Every attempt that reaches an outcome adds one :class:`AttemptEntry` to the task's optional ``history`` member
(asyncjobs' Go programs ignore members they do not know). A task retried thousands of times must stay small, so the
history keeps the first :data:`KEEP_FIRST` attempts (how it started failing) and the last :data:`KEEP_LAST` (how it
fails now), counts the ones dropped in between, and caps every text: at most 20 entries of at most ~1.1 KB (512
characters of error, 120 of progress message, 64 per name), so the history never passes ~23 KB whatever the number of
tries, and is typically 3-6 KB.
"""

from __future__ import annotations

from typing import Any

import msgspec
from jetbridge.internal import AttemptEntry, AttemptHistory, TaskRecord, format_ns, parse_ns

from .states import AttemptOutcome, Decision

#: attempts kept from the start of the history
KEEP_FIRST = 3
#: attempts kept from its end
KEEP_LAST = 17
#: longest error message kept per attempt (characters)
MAX_MESSAGE = 512
#: longest progress message kept per attempt
MAX_PROGRESS_MESSAGE = 120
#: longest handler instance or language name kept
MAX_NAME = 64


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded(history: AttemptHistory, entry: AttemptEntry) -> AttemptHistory:
    """``history`` with ``entry`` appended, trimmed to the first KEEP_FIRST and the last KEEP_LAST attempts."""
    attempts = [*history.attempts, entry]
    dropped = history.dropped
    excess = len(attempts) - (KEEP_FIRST + KEEP_LAST)
    if excess > 0:
        attempts = attempts[:KEEP_FIRST] + attempts[KEEP_FIRST + excess:]
        dropped += excess
    return AttemptHistory(attempts=attempts, dropped=dropped)


def record_attempt(
    task: TaskRecord, outcome: AttemptOutcome, decision: Decision, *, now_ns: int, dispatcher: str = "",
) -> TaskRecord:
    """The active ``task`` with its current attempt (``task.tries``) added to its history; ``task`` is unchanged.

    ``decision`` is what the state machine made of ``outcome``: an outcome that gives the try back (shutdown, no
    handler) is not an attempt, so it is not recorded. The handler instance and language come from ``outcome.extra`` when the reply
    named them (``handler``, ``sdk``).
    """
    if decision.tries_delta < 0:
        return task
    start = task.tried or ""
    try:
        duration_ms = max(0, (now_ns - parse_ns(start)) // 1_000_000) if start else 0
    except ValueError:
        duration_ms = 0
    extra: dict[str, Any] = outcome.extra or {}
    message = outcome.message if outcome.kind != "complete" else ""
    entry = AttemptEntry(
        n=task.tries, start=start, end=format_ns(now_ns), ms=int(duration_ms), outcome=outcome.kind,
        code=_cap(outcome.error_code if outcome.kind != "complete" else "", MAX_NAME),
        msg=_cap(message, MAX_MESSAGE), dispatcher=_cap(dispatcher, MAX_NAME),
        handler=_cap(str(extra.get("handler", "")), MAX_NAME), lang=_cap(str(extra.get("sdk", "")), MAX_NAME),
        progress=task.progress, progress_msg=_cap(task.progress_message, MAX_PROGRESS_MESSAGE), replay=task.replays,
    )
    return msgspec.structs.replace(task, history=bounded(task.history or AttemptHistory(), entry))


def timeline(task: TaskRecord) -> list[str]:
    """The history as lines for ``task get``: one per attempt, with a marker where attempts were dropped."""
    history = task.history
    if history is None or not history.attempts:
        return []
    lines: list[str] = []
    for i, a in enumerate(history.attempts):
        if i == KEEP_FIRST and history.dropped:
            lines.append(f"  … {history.dropped} attempts not kept …")
        took = f"{a.ms / 1000:.3f}s" if a.ms < 600_000 else f"{a.ms / 60_000:.1f}m"
        who = " ".join(x for x in (a.dispatcher and f"by {a.dispatcher}", a.handler and f"on {a.handler}",
                                   a.lang and f"({a.lang})") if x)
        replay = f" [replay {a.replay}]" if a.replay else ""
        error = f" {a.code}: {a.msg}" if a.code or a.msg else ""
        progress = f" progress {a.progress:.0%}" if a.progress is not None else ""
        lines.append(f"#{a.n}{replay} {a.start[:23]} {took} {a.outcome}{error}{progress} {who}".rstrip())
    return lines
