"""The internal layer: what the Jetbridge dispatcher (the ``jetbridge`` command, package ``bridge``) uses of this SDK.

The dispatcher and the SDK share one storage layout, one wire codec and one task model, so the dispatcher is built
on the SDK's internals rather than on a copy of them. This module is the one seam between the two: ``bridge`` imports
from here (and from the public ``jetbridge`` package) only, never from the private ``jetbridge._*`` modules, and a
lint rule (ruff ``TID251``, ``pyproject.toml``) enforces it.

Stability: these names are versioned with the SDK and the dispatcher *together* (the dispatcher pins the SDK it was
released with). They are not part of the public API: applications use ``jetbridge`` (``Producer``, ``Service``,
``Task``, the errors), which follows semantic versioning; code outside this repository that imports from here may
break in any release.

What is here, by the private module that owns it:

- task model and codec (``_task``): :class:`TaskRecord`, :class:`TaskState`, attempt history, ``encode_task`` /
  ``decode_task``;
- storage (``_store``): :class:`TaskStore` (the asyncjobs layout: tasks stream, work-queue streams, KV buckets),
  JetStream API helpers and error codes;
- the handler protocol (``_protocol``, ``names``): request/reply codec, subjects and header names, also used by
  ``jetbridge handle``;
- the fast wire path (``_fastread``, ``_fastwrite``): a one-pass protocol parser with *lanes* (subscriptions
  whose messages reach a plain function inside the read loop) and publishes queued without awaiting;
- request-reply (``_requester``), signing (``_signing``), lifecycle events (``_events``), in-flight accounting
  (``_inflight``);
- schedules and delays (``_schedule``, ``_cron``, ``_delay``): the stored schedule documents and the cron rules the
  scheduler fires;
- time (``_timeutil``): the RFC 3339 nanosecond timestamps of the asyncjobs layout;
- random bytes (``_random``): CSPRNG bytes drawn in bulk, never reused, also across a fork (attempt tokens);
- errors (``_errors``): the SDK's error classes, including the ones not exported publicly.
"""

from . import _names as names
from . import _protocol as proto
from ._cron import (
    CronSpec,
    format_slot,
    jitter_ns,
    parse_cron,
    slot_task_id,
)
from ._delay import (
    due_of,
)
from ._errors import (
    ConfigError,
    ConflictError,
    CorruptTaskError,
    DuplicateTaskError,
    JetbridgeError,
    PayloadTooLargeError,
    ProtocolError,
    QueueFullError,
    QueueNotFoundError,
    TaskNotFoundError,
    TransportError,
)
from ._events import (
    TaskStateEvent,
    decode_event,
    task_state_event,
)
from ._fastread import (
    drop_lane,
    harden,
    subscribe_lane,
)
from ._fastwrite import (
    command_nowait,
    publish_nowait,
)
from ._fastwrite import (
    publish as publish_fast,
)
from ._inflight import (
    InFlight,
)
from ._producer import (
    MAX_TRIES_LIMIT,
    Producer,
)
from ._protocol import (
    JSON_CONTENT_TYPE,
    Bytes,
)
from ._random import (
    RandomPool,
)
from ._requester import (
    Requester,
)
from ._schedule import (
    DEF_PREFIX,
    ScheduleDoc,
    Schedules,
    ScheduleState,
    ScheduleView,
    check_name,
    config_bucket,
    decode_doc,
    decode_state,
    def_key,
    fire,
    schedule_names,
    state_key,
)
from ._signing import (
    Signer,
    Verifier,
)
from ._store import (
    ERR_MAX_MESSAGES,
    ERR_NO_MESSAGE,
    ERR_STREAM_NOT_FOUND,
    ERR_UNAVAILABLE,
    JetStreamError,
    TaskStore,
    js_api,
    js_publish,
)
from ._task import (
    AttemptEntry,
    AttemptHistory,
    TaskRecord,
    TaskResult,
    TaskState,
    decode_task,
    encode_task,
)
from ._timeutil import (
    MS,
    NS,
    format_ms,
    format_ns,
    now_ns,
    parse_ns,
)

__all__ = [
    "AttemptEntry",
    "AttemptHistory",
    "Bytes",
    "ConfigError",
    "ConflictError",
    "CorruptTaskError",
    "CronSpec",
    "DEF_PREFIX",
    "DuplicateTaskError",
    "ERR_MAX_MESSAGES",
    "ERR_NO_MESSAGE",
    "ERR_STREAM_NOT_FOUND",
    "ERR_UNAVAILABLE",
    "InFlight",
    "JSON_CONTENT_TYPE",
    "JetStreamError",
    "JetbridgeError",
    "MAX_TRIES_LIMIT",
    "MS",
    "NS",
    "PayloadTooLargeError",
    "Producer",
    "ProtocolError",
    "QueueFullError",
    "QueueNotFoundError",
    "RandomPool",
    "Requester",
    "ScheduleDoc",
    "ScheduleState",
    "ScheduleView",
    "Schedules",
    "Signer",
    "Verifier",
    "TaskNotFoundError",
    "TaskRecord",
    "TaskResult",
    "TaskState",
    "TaskStateEvent",
    "TaskStore",
    "TransportError",
    "check_name",
    "command_nowait",
    "config_bucket",
    "decode_doc",
    "decode_event",
    "decode_state",
    "decode_task",
    "drop_lane",
    "harden",
    "def_key",
    "due_of",
    "encode_task",
    "fire",
    "format_ms",
    "format_ns",
    "format_slot",
    "jitter_ns",
    "js_api",
    "js_publish",
    "names",
    "now_ns",
    "parse_cron",
    "parse_ns",
    "proto",
    "publish_fast",
    "publish_nowait",
    "schedule_names",
    "slot_task_id",
    "state_key",
    "subscribe_lane",
    "task_state_event",
]
