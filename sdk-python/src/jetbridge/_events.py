"""Lifecycle events: asyncjobs' ``io.choria.asyncjobs.v1.task_state`` on ``CHORIA_AJ.E.task_state.<id>``.

Events are core NATS publishes (best effort, as in asyncjobs). Jetbridge adds ``progress`` and
``progress_message``; asyncjobs tooling ignores members it does not know. asyncjobs makes each ``event_id`` a
KSUID; Jetbridge uses a random per-process prefix and a counter, because a KSUID costs more than the rest of the
event and nothing reads the id but as a unique string.
"""

from __future__ import annotations

import itertools
import os
import secrets

import msgspec

from . import _names as names
from ._task import TaskRecord
from ._timeutil import format_ns, now_ns


class TaskStateEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    event_id: str
    type: str
    timestamp: str
    task_id: str
    state: str
    tries: int
    queue: str = ""
    task_type: str
    last_error: str = ""
    task_age: int = 0
    progress: float | None = None
    progress_message: str = ""


_EVENT_PREFIX = secrets.token_hex(6)
_event_counter = itertools.count(1)


def _new_prefix() -> None:
    """A forked child gets a prefix of its own: with its parent's, both would number the same ids."""
    global _EVENT_PREFIX, _event_counter
    _EVENT_PREFIX, _event_counter = secrets.token_hex(6), itertools.count(1)


os.register_at_fork(after_in_child=_new_prefix)


def _new_event_id() -> str:
    return f"{_EVENT_PREFIX}{next(_event_counter):08x}"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TaskStateEvent)


def task_state_event(doc: TaskRecord) -> bytes:
    now = now_ns()
    return _encoder.encode(TaskStateEvent(
        event_id=_new_event_id(), type=names.TASK_STATE_EVENT, timestamp=format_ns(now), task_id=doc.id, state=doc.state, tries=doc.tries,
        queue=doc.queue, task_type=doc.type, last_error=doc.last_err, task_age=max(0, now - doc.created_ns),
        progress=doc.progress, progress_message=doc.progress_message,
    ))


def decode_event(data: bytes) -> TaskStateEvent:
    return _decoder.decode(data)
