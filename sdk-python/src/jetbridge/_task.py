"""The stored task document: asyncjobs' task JSON, plus a few optional members of Jetbridge's own.

asyncjobs Go programs read and write the same documents, so the asyncjobs members keep their names, types and
presence rules (``payload`` is base64 bytes or null; ``queue``, ``max_tries``, ``tries`` are always present).
Go's encoding/json ignores the members it does not know, so Jetbridge's additions are safe for it; a Go program
that saves a task drops them, which costs only progress information.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

from ._protocol import Bytes
from ._timeutil import format_ns, parse_ns


class TaskState(StrEnum):
    """A task's state. The strings are asyncjobs' own, plus ``no_handler``."""

    #: enqueued, waiting for its first attempt
    NEW = "new"
    #: an attempt is running
    ACTIVE = "active"
    #: an attempt failed; the task waits for its next attempt
    RETRY = "retry"
    #: no handler answered for its type; waits without spending attempts
    NO_HANDLER = "no_handler"
    #: done, with a result
    COMPLETE = "complete"
    #: past its deadline or out of attempts
    EXPIRED = "expired"
    #: failed for good (a handler said so, an operator cancelled it, or it cannot be run)
    TERMINATED = "terminated"
    #: asyncjobs: could not be put on its queue
    QUEUE_ERROR = "queue_error"
    #: asyncjobs: waits for dependencies
    BLOCKED = "blocked"
    #: asyncjobs: a dependency failed
    UNREACHABLE = "unreachable"
    #: enqueued with a delay: waits, holding no slot, until ``due`` (see jetbridge._delay)
    SCHEDULED = "scheduled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


_STATES: dict[str, TaskState] = {state.value: state for state in TaskState}


TERMINAL_STATES = frozenset(
    {TaskState.COMPLETE, TaskState.EXPIRED, TaskState.TERMINATED, TaskState.QUEUE_ERROR, TaskState.UNREACHABLE}
)


class TaskResult(msgspec.Struct, omit_defaults=True):
    """asyncjobs' ``{"payload", "completed"}``; binary results are base64 strings marked by ``encoding``."""

    payload: Any
    completed: str
    encoding: str = ""
    content_type: str = ""

    def value(self) -> Any:
        """The result as the handler gave it: a JSON value, or :class:`Bytes`."""
        if self.encoding == "base64" and isinstance(self.payload, str):
            import base64

            return Bytes(base64.b64decode(self.payload), self.content_type or "application/octet-stream")
        return self.payload


class AttemptEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One attempt in a task's history (short member names: a task may carry twenty of these)."""

    #: attempt number (the task's ``tries`` when it ran)
    n: int
    start: str = ""
    end: str = ""
    #: duration in milliseconds
    ms: int = 0
    #: how it ended: complete, retry, terminate, timeout, lost, protocol_error, ...
    outcome: str = ""
    code: str = ""
    msg: str = ""
    dispatcher: str = ""
    #: the handler instance and its language (``python/1.2``), when the reply named them
    handler: str = ""
    lang: str = ""
    progress: float | None = None
    progress_msg: str = ""
    #: which replay of a dead letter this attempt belongs to (0: before any replay)
    replay: int = 0


class AttemptHistory(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A bounded history: the first attempts and the latest ones, with a count of those dropped in between."""

    attempts: list[AttemptEntry] = msgspec.field(default_factory=list)
    dropped: int = 0


class TaskRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One task as stored on ``CHORIA_AJ.T.<id>``. Member order follows asyncjobs' Go struct."""

    id: str
    type: str
    queue: str
    dependencies: list[str] | None = None
    dependency_results: dict[str, Any] | None = None
    load_dependencies: bool = False
    payload: bytes | None
    deadline: str | None = None
    max_tries: int
    result: TaskResult | None = None
    state: str
    created: str
    tried: str | None = None
    tries: int
    last_err: str = ""
    signature: str = ""
    # Jetbridge's own members (absent in asyncjobs' documents).
    content_type: str = ""
    last_err_code: str = ""
    progress: float | None = None
    progress_message: str = ""
    #: when a ``scheduled`` task is due (RFC 3339)
    due: str = ""
    #: Jetbridge: the dispatcher that runs (or last ran) an attempt; asked before another takes an active task over
    dispatcher: str = ""
    #: bounded attempt history (bridge/history.py) and how often the task was replayed from the dead letters
    history: AttemptHistory | None = None
    replays: int = 0
    #: the W3C trace context of the enqueue (jetbridge.tracing): the dispatcher's and handler's spans join its trace
    traceparent: str = ""

    @property
    def task_state(self) -> TaskState:
        found = _STATES.get(self.state)  # a dict, not TaskState(...): an enum call is a few us, read often per task
        if found is None:
            return TaskState.NEW if self.state == "" else TaskState.TERMINATED
        return found

    @property
    def created_ns(self) -> int:
        return parse_ns(self.created)

    @property
    def due_ns(self) -> int | None:
        return parse_ns(self.due) if self.due else None

    @property
    def deadline_ns(self) -> int | None:
        return parse_ns(self.deadline) if self.deadline else None

    def is_past_deadline(self, now_ns: int) -> bool:
        deadline = self.deadline_ns
        return deadline is not None and now_ns > deadline


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TaskRecord)


def encode_task(doc: TaskRecord) -> bytes:
    return _encoder.encode(doc)


def decode_task(data: bytes) -> TaskRecord:
    """Raises ``msgspec.DecodeError`` (a ValueError) for corrupt documents."""
    try:
        return _decoder.decode(data)
    except RecursionError:
        raise msgspec.DecodeError("the task document's JSON is nested too deeply") from None


def new_task(
    *, task_id: str, task_type: str, queue: str, payload: bytes | None, content_type: str,
    max_tries: int, created_ns: int, deadline_ns: int | None,
) -> TaskRecord:
    return TaskRecord(
        id=task_id, type=task_type, queue=queue, payload=payload, max_tries=max_tries,
        state=TaskState.NEW.value, created=format_ns(created_ns),
        deadline=format_ns(deadline_ns) if deadline_ns is not None else None, tries=0,
        content_type=content_type,
    )
