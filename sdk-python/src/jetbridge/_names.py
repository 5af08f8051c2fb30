"""Every stream, subject and header name Jetbridge uses, in one place.

The storage names default to choria asyncjobs' own, so that asyncjobs Go programs and Jetbridge share queues;
keeping them here makes that compatibility reviewable on one screen.
"""

from __future__ import annotations

import functools
import re

import msgspec

#: Task ids, task types and queue names: one subject token (asyncjobs' ``IsValidName``). This is the schema's
#: pattern text; Python code matches names with :func:`is_valid_name` (a full match: ``$`` alone would accept a
#: trailing newline, which then breaks subjects).
NAME_PATTERN = r"^[a-zA-Z0-9_:-]+$"
_NAME_RE = re.compile(r"[a-zA-Z0-9_:-]+")
_ITEM_ENCODER = msgspec.json.Encoder()
MAX_NAME_LENGTH = 256

TASKS_STREAM = "CHORIA_AJ_TASKS"
TASK_SUBJECT_PREFIX = "CHORIA_AJ.T"
QUEUE_STREAM_PREFIX = "CHORIA_AJ_Q_"
QUEUE_SUBJECT_PREFIX = "CHORIA_AJ.Q"
QUEUE_CONSUMER = "WORKERS"
EVENT_SUBJECT_PREFIX = "CHORIA_AJ.E"
TASK_STATE_EVENT = "io.choria.asyncjobs.v1.task_state"

#: Jetbridge's own retry schedules: one stream for all queues (see bridge/retries.py).
SCHEDULE_STREAM = "JETBRIDGE_SCHEDULES"
SCHEDULE_SUBJECT_PREFIX = "jetbridge.schedule"
DUE_SUBJECT_PREFIX = "jetbridge.due"

#: Handler routing and the control subjects of the wire protocol.
DEFAULT_TASK_SUBJECT_PREFIX = "jetbridge.task"
HEARTBEAT_SUBJECT_PREFIX = "jetbridge.hb"
CANCEL_SUBJECT_PREFIX = "jetbridge.cancel"
CONTROL_CANCEL_SUBJECT = "jetbridge.control.cancel"
ASYNCJOBS_HANDLER_PREFIX = "CHORIA_AJ.H.T"
HANDLER_QUEUE_GROUP = "jetbridge"

# Headers of the wire protocol.
H_PROTOCOL = "Jetbridge-Protocol"
H_TASK_ID = "Jetbridge-Task-Id"
H_TASK_TYPE = "Jetbridge-Task-Type"
H_QUEUE = "Jetbridge-Queue"
H_ATTEMPT = "Jetbridge-Attempt"
H_ATTEMPT_DEADLINE = "Jetbridge-Attempt-Deadline"
H_RETRY_AFTER = "Jetbridge-Retry-After-Ms"
H_TRACEPARENT = "traceparent"
H_SERVICE_ERROR = "Nats-Service-Error"
H_SERVICE_ERROR_CODE = "Nats-Service-Error-Code"

# asyncjobs request-reply headers (compatibility mode).
H_AJ_CONTENT_TYPE = "AJ-Content-Type"
H_AJ_DEADLINE = "AJ-Handler-Deadline"
H_AJ_ERROR = "AJ-Error"
H_AJ_TERMINATE = "AJ-Terminate"
AJ_TASK_CONTENT_TYPE = "application/x-asyncjobs-task+json"

# JetStream headers.
H_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
H_MSG_ID = "Nats-Msg-Id"
H_SCHEDULE = "Nats-Schedule"
H_SCHEDULE_TARGET = "Nats-Schedule-Target"


def is_valid_name(name: object) -> bool:
    """True when ``name`` can be a task id, task type or queue name."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH and _NAME_RE.fullmatch(name) is not None


@functools.lru_cache(maxsize=1024)
def _is_valid_label(name: str) -> bool:
    return is_valid_name(name)


def is_valid_label(name: object) -> bool:
    """:func:`is_valid_name` for names that repeat (task types, queue names): remembered, where ids would only
    crowd the memory out. Only names short enough to be valid are remembered (an API caller's megabyte-long
    type is refused without being kept)."""
    return isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and _is_valid_label(name)


def task_subject(task_id: str) -> str:
    return f"{TASK_SUBJECT_PREFIX}.{task_id}"


def queue_stream(queue: str) -> str:
    return f"{QUEUE_STREAM_PREFIX}{queue}"


def queue_subject(queue: str, task_id: str) -> str:
    return f"{QUEUE_SUBJECT_PREFIX}.{queue}.{task_id}"


def work_item(task_id: str) -> bytes:
    """A work item's body, in asyncjobs' form: what every publisher of an item (producer, retry mover,
    reconciler, replay, a restored item) puts on a queue subject."""
    return _ITEM_ENCODER.encode({"kind": 0, "job": task_id})


def queue_subjects(queue: str) -> str:
    return f"{QUEUE_SUBJECT_PREFIX}.{queue}.>"


def task_state_event_subject(task_id: str) -> str:
    return f"{EVENT_SUBJECT_PREFIX}.task_state.{task_id}"


def handler_subject(task_type: str, prefix: str = DEFAULT_TASK_SUBJECT_PREFIX) -> str:
    return f"{prefix}.{task_type}"
