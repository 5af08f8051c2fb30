"""The history the checker reads (see checker.py): what each part of a run recorded, as plain frozen data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

NS = 1_000_000_000
INF = float("inf")
TERMINAL = frozenset({"complete", "terminated", "expired"})


@dataclass(frozen=True)
class Attempt:
    task_id: str
    attempt: int
    token: str
    instance: str
    queue: str
    start: int
    #: when the attempt ended as the handler saw it (None: never, e.g. its process was killed)
    end: int | None = None
    #: ok, retry, terminate, error, cancel (None: no end recorded)
    how: str | None = None
    reason: str = ""
    result: Any = None
    #: retry_after the handler asked for, seconds (retry replies)
    after: float | None = None
    type: str = "chk:work"
    created: str = ""
    deadline: str | None = None
    payload: str = ""  # base64


@dataclass(frozen=True)
class Content:
    """The signed part of a task version, with its signature."""

    task_id: str
    queue: str
    type: str
    max_tries: int
    created: str
    deadline: str | None
    payload: str  # base64
    signature: str
    #: the version's state and its sequence in the task store's history (0: not from the store's history)
    state: str = ""
    seq: int = 0


@dataclass(frozen=True)
class Accepted:
    """A task the producer was told it enqueued (the latest incarnation of its id)."""

    task_id: str
    queue: str
    max_tries: int
    signed: bool
    accepted_at: int
    deleted: bool = False
    #: base64 payload, to tell incarnations of a reused id apart
    payload: str = ""
    #: False when the enqueue raised (the client was told it failed) but the task is in the store anyway: it is
    #: checked like any other, except that it need not end
    acknowledged: bool = True
    #: queues it was moved from (``task retry --queue``): attempts there were of this task too
    moved_from: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Final:
    state: str
    tries: int
    result: Any = None
    payload: str = ""
    has_item: bool = False
    has_schedule: bool = False
    last_err: str = ""
    #: where its work item sits (for the report of a stalled task)
    note: str = ""


@dataclass
class History:
    attempts: list[Attempt] = field(default_factory=list)
    tasks: dict[str, Accepted] = field(default_factory=dict)
    versions: list[Content] = field(default_factory=list)
    finals: dict[str, Final | None] = field(default_factory=dict)
    #: queue -> [(time_ns, max_tries)], sorted; -1 or 0 is "no limit"
    queue_limits: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: instance -> [(stop_ns, cont_ns)]
    pauses: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    deaths: dict[str, int] = field(default_factory=dict)
    signed_queues: frozenset[str] = frozenset()
    #: tasks that operators or forged items touched (exempt from the retry-delay check)
    touched: frozenset[str] = frozenset()
    #: tasks an operator ran again (``task retry``): whether that resets the count is policy, so the tries and
    #: attempt-number rules leave them out
    retried: frozenset[str] = frozenset()
    #: task ids deleted and enqueued again: attempts with different payloads belong to different tasks
    reused: frozenset[str] = frozenset()
    #: when faults were injected (a reply lost to a fault is no early retry)
    faults: list[int] = field(default_factory=list)
    #: when the run began (times in reports are seconds from here)
    began: int = 0
    #: when the run ended (an attempt with no end and no death is live until then)
    ended: int = 0


@dataclass(frozen=True)
class Anomaly:
    kind: str
    task_id: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.task_id}: {self.detail}"


def attempts_from_lines(lines: Iterable[dict[str, Any]]) -> list[Attempt]:
    """Pair the recording handler's ``start`` and ``end`` lines by attempt token (the first end counts; a ``reply``
    line gives the result a cancelled attempt sent anyway)."""
    starts: dict[str, dict[str, Any]] = {}
    ends: dict[str, dict[str, Any]] = {}
    late: dict[str, Any] = {}
    for line in lines:
        token = str(line.get("token", ""))
        if line.get("ev") == "start":
            starts.setdefault(token, line)
        elif line.get("ev") == "end":
            ends.setdefault(token, line)
        elif line.get("ev") == "reply":
            late.setdefault(token, line.get("result"))
    out = []
    for token, s in starts.items():
        e = ends.get(token, {})
        out.append(Attempt(task_id=s["task_id"], attempt=int(s["attempt"]), token=token, instance=s["instance"],
                           queue=s["queue"], start=int(s["t"]), end=e.get("t"), how=e.get("how"),
                           reason=str(e.get("reason") or ""), result=e.get("result", late.get(token)),
                           after=e.get("after"),
                           type=s.get("type", ""),
                           created=s.get("created", ""), deadline=s.get("deadline"), payload=s.get("payload", "")))
    return sorted(out, key=lambda a: a.start)
