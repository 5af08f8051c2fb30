"""Request and response bodies. Names, members and presence rules are asyncjobs' (``api/openapi.yaml``), so the
generated OpenAPI document describes the same wire format; Jetbridge's additions are optional members."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import msgspec
from jetbridge.internal import TaskRecord
from pydantic import BaseModel, ConfigDict, Field

NAME = r"^[a-zA-Z0-9_:-]+$"
#: a queue name short enough for its stream name (255 characters at most, with the ``CHORIA_AJ_Q_`` prefix)
QUEUE_NAME_MAX = 200
#: schedule names: no ``:`` (a KV key token), as jetbridge._schedule.check_name requires
SCHEDULE_NAME = r"^[a-zA-Z0-9_-]{1,200}$"
#: a task id in a body: one NATS subject token, so it can never widen a store lookup or purge (``*``, ``>``, ``.``)
TASK_ID = r"^[^.*>\s]+$"
TaskIdItem = Annotated[str, Field(min_length=1, max_length=256, pattern=TASK_ID)]
DATE_TIME: dict[str, Any] = {"format": "date-time"}


class Strict(BaseModel):
    """Request bodies are decoded strictly: an unknown member is a 400, as in asyncjobs."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TaskCreateRequest(Strict):
    type: str = Field(min_length=1, max_length=256, pattern=NAME)
    queue: str | None = Field(None, min_length=1, max_length=QUEUE_NAME_MAX, pattern=NAME,
                              description="Jetbridge honours it (asyncjobs ignores it); default: the server's queue")
    payload: Any = None
    payload_base64: str | None = None
    deadline: str | None = Field(None, description="RFC 3339", json_schema_extra=DATE_TIME)
    max_tries: int | None = Field(None, ge=0, le=1_000_000)
    dependencies: list[str] | None = Field(None, max_length=0, description="not supported by Jetbridge")
    load_dependencies: bool | None = None
    signature: str | None = None


class TaskResult(BaseModel):
    payload: Any = None
    completed: str


class Attempt(BaseModel):
    n: int
    start: str | None = None
    end: str | None = None
    ms: int | None = None
    outcome: str | None = None
    code: str | None = None
    msg: str | None = None
    dispatcher: str | None = None
    handler: str | None = None
    lang: str | None = None
    replay: int | None = None


class History(BaseModel):
    attempts: list[Attempt] = []
    dropped: int = 0


class Task(BaseModel):
    id: str
    type: str
    state: str
    created: str
    payload: str | None = Field(description="base64 of the payload bytes, or null")
    queue: str | None = None
    dependencies: list[str] | None = None
    load_dependencies: bool | None = None
    deadline: str | None = None
    max_tries: int | None = None
    result: TaskResult | None = None
    tried: str | None = None
    tries: int | None = None
    last_err: str | None = None
    signature: str | None = None
    # Jetbridge's own
    last_err_code: str | None = None
    content_type: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    due: str | None = None
    replays: int | None = None
    history: History | None = None


def task_view(t: TaskRecord) -> dict[str, Any]:
    """A stored task as asyncjobs' REST API shows it: empty members left out, ``payload`` base64 or null."""
    d: dict[str, Any] = {"id": t.id, "type": t.type, "state": t.state, "created": t.created,
                         "payload": None if t.payload is None or t.payload == b"null" else
                         base64.b64encode(t.payload).decode()}  # JSON null is no payload, as for asyncjobs
    optional: dict[str, Any] = {
        "queue": t.queue, "dependencies": t.dependencies, "load_dependencies": t.load_dependencies,
        "deadline": t.deadline, "max_tries": t.max_tries, "tried": t.tried, "tries": t.tries, "last_err": t.last_err,
        "signature": t.signature, "last_err_code": t.last_err_code, "content_type": t.content_type,
        "progress": t.progress, "progress_message": t.progress_message, "due": t.due, "replays": t.replays,
    }
    d.update({k: v for k, v in optional.items() if v})
    if t.result is not None:
        d["result"] = {"payload": t.result.payload, "completed": t.result.completed}
    if t.history is not None:
        d["history"] = msgspec.to_builtins(t.history)
    return d


class TaskListResponse(BaseModel):
    tasks: list[Task]
    count: int
    cursor: str | None = Field(None, description="Jetbridge: pass as `cursor` for the next page")
    total: int | None = Field(None, description="Jetbridge: how many tasks match in all")


class BulkRetryRequest(Strict):
    ids: list[str] | None = None


class BulkRetryResult(BaseModel):
    id: str
    status: str
    error: str | None = None


class BulkRetryResponse(BaseModel):
    results: list[BulkRetryResult]


class QueueInfo(BaseModel):
    name: str
    time: str | None = None
    max_age: int | None = None
    max_entries: int | None = None
    discard_old: bool | None = None
    max_tries: int | None = None
    max_runtime: int | None = None
    max_concurrent: int | None = None
    # Jetbridge's own
    waiting: int | None = None
    in_flight: int | None = None
    paused: bool | None = None
    paused_until: str | None = None
    dead_letters: int | None = None


class QueueList(BaseModel):
    queues: list[QueueInfo]


class QueueCreateRequest(Strict):
    name: str = Field(min_length=1, max_length=QUEUE_NAME_MAX, pattern=NAME)
    max_age: str | None = None
    max_entries: int | None = Field(None, ge=0)
    discard_old: bool | None = None
    max_tries: int | None = Field(None, ge=-1, le=1_000_000)
    max_runtime: str | None = None
    max_concurrent: int | None = Field(None, ge=1, le=1_000_000)


class Schedule(BaseModel):
    name: str
    schedule: str
    queue: str
    task_type: str
    created_at: str
    payload: str | None = None
    deadline: int | None = None
    max_tries: int | None = None
    paused: bool | None = None
    next_fire: str | None = None


class ScheduleList(BaseModel):
    schedules: list[Schedule]


class ScheduleCreateRequest(Strict):
    name: str = Field(pattern=SCHEDULE_NAME)
    schedule: str = Field(min_length=1, max_length=200)
    queue: str = Field(min_length=1, max_length=QUEUE_NAME_MAX, pattern=NAME)
    task_type: str = Field(min_length=1, max_length=256, pattern=NAME)
    payload: Any = None
    payload_base64: str | None = None
    deadline_offset: str | None = None
    max_tries: int | None = Field(None, ge=0, le=1_000_000)


class RetryPolicy(BaseModel):
    name: str
    intervals: list[int]
    jitter: float


class RetryPolicies(BaseModel):
    policies: list[RetryPolicy]


class Info(BaseModel):
    version: str
    auth: str
    queue_count: int | None = None
    task_count: int | None = None
    features: list[str] | None = None


class Health(BaseModel):
    status: str
    time: str


class Check(BaseModel):
    ok: bool
    error: str | None = None


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Check]


class PauseRequest(Strict):
    until: str | None = Field(None, description="RFC 3339; none: until resumed", json_schema_extra=DATE_TIME)
    note: str = Field("", max_length=500)


class PauseState(BaseModel):
    queue: str
    paused: bool
    until: str | None = None
    note: str | None = None
    since: str | None = None


class DeadLetter(BaseModel):
    id: str
    state: str
    type: str
    queue: str
    code: str | None = None
    error: str | None = None
    updated: str | None = None


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetter]
    count: int
    total: int
    cursor: str | None = None


class ReplayRequest(Strict):
    ids: list[TaskIdItem] | None = Field(None, max_length=1000)
    queue: str | None = Field(None, pattern=NAME, description="only dead letters of this queue (with no ids)")
    type: str | None = Field(None, max_length=256)
    to_queue: str | None = Field(None, pattern=NAME)
    dry_run: bool = False


class ReplayResult(BaseModel):
    id: str
    status: str
    error: str | None = None


class ReplayResponse(BaseModel):
    matched: int
    replayed: int
    results: list[ReplayResult]


class HandlerEndpoint(BaseModel):
    name: str
    subject: str
    task_type: str | None = Field(None, description="the endpoint's ``jetbridge.task_type`` metadata")
    requests: int = 0
    errors: int = 0
    average_processing_time: int = 0


class HandlerInstance(BaseModel):
    name: str
    id: str
    version: str
    language: str | None = Field(None, description="from ``jetbridge.sdk`` (``<language>/<version>``), else "
                                                   "``language`` or ``lang`` metadata")
    sdk_version: str | None = Field(None, description="the Jetbridge library's version, from ``jetbridge.sdk``")
    protocols: list[str] | None = Field(None, description="``jetbridge.protocols``: protocol versions spoken")
    endpoints: list[HandlerEndpoint]


class HandlerList(BaseModel):
    handlers: list[HandlerInstance]


class Dispatcher(BaseModel):
    id: str
    version: str
    started: float | None = Field(None, description="Unix time the dispatcher started")
    uptime_s: float | None = None
    queues: list[str] = Field(description="queues it serves now")
    configured: list[str] | None = Field(None, description="queues it was told to serve ('*': all)")
    in_flight: int | None = Field(None, description="attempts running now (absent: it did not answer)")
    answered: bool = Field(description="whether it answered its status request (else: from its announcement)")


class DispatcherList(BaseModel):
    dispatchers: list[Dispatcher]


class Limit(BaseModel):
    id: str
    types: str = Field(description="task types it limits (a pattern such as 'email:*')")
    queues: str = Field(description="queues it limits (a pattern; '*': all)")
    concurrency: int | None = Field(None, description="attempts that may run at once, across every dispatcher")
    rate: str | None = Field(None, description="starts allowed, as the operator wrote it (100/s, 6000/m)")
    rate_per_s: float | None = None
    burst: int | None = None
    adaptive: bool = Field(description="whether handlers' 'overloaded' retries lower the rate for a while")
    running: int | None = Field(None, description="permits held now (concurrency limits)")


class LimitList(BaseModel):
    limits: list[Limit]


class SchedulePauseRequest(Strict):
    note: str = Field("", max_length=500)


class ScheduleTriggered(BaseModel):
    name: str
    task_id: str = Field(description="the task fired now, outside the schedule's slots")


class DeadLetterDeleteRequest(Strict):
    """The listed ``ids``, or every dead letter matching the filters (at most 1000 per call); ``dry_run`` previews."""

    ids: list[TaskIdItem] | None = Field(None, max_length=1000)
    queue: str | None = Field(None, pattern=NAME)
    type: str | None = Field(None, max_length=256)
    error: str | None = Field(None, max_length=200)
    dry_run: bool = False


class DeadLetterDeleteResponse(BaseModel):
    matched: int = Field(description="dead letters selected (at most 1000)")
    deleted: int = Field(description="removed (0 on a dry run; a task replayed meanwhile is kept)")
    ids: list[str] = Field(description="the selected ids (dry run) or those removed")
