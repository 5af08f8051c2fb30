"""asyncjobs' REST API (``/v1/...``, ``/healthz``, ``/readyz``) over Jetbridge: same paths, bodies and errors."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from jetbridge.internal import (
    NS,
    DuplicateTaskError,
    JetbridgeError,
    QueueNotFoundError,
    TaskNotFoundError,
    check_name,
    format_ns,
    now_ns,
)

from .. import dlq
from ..index import Query as IndexQuery
from ..queues import QueueConfig
from . import convert, models
from .auth import need
from .backend import Backend
from .errors import ApiError, ErrorEnvelope, from_jetbridge

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope}, 401: {"model": ErrorEnvelope}, 403: {"model": ErrorEnvelope},
    404: {"model": ErrorEnvelope}, 409: {"model": ErrorEnvelope}, 413: {"model": ErrorEnvelope},
    429: {"model": ErrorEnvelope}, 503: {"model": ErrorEnvelope},
}
READ, PRODUCE, OPERATE = Depends(need("read")), Depends(need("producer")), Depends(need("operator"))
#: how long an Idempotency-Key is remembered (asyncjobs: 10 minutes, in memory)
IDEMPOTENCY_S = 600.0


#: path parameters: a task id (a NATS subject token) and a queue or schedule name (asyncjobs' name rule)
TaskId = Annotated[str, Path(min_length=1, max_length=256, pattern=r"^[^.*>\s]+$", description="task id")]
Name = Annotated[str, Path(min_length=1, max_length=models.QUEUE_NAME_MAX, pattern=models.NAME)]
ScheduleName = Annotated[str, Path(pattern=models.SCHEDULE_NAME)]


async def backend(request: Request) -> Backend:
    """Async, so FastAPI runs it on the loop: a plain ``def`` dependency costs a worker-thread hop per request."""
    return request.app.state.backend  # type: ignore[no-any-return]


B = Annotated[Backend, Depends(backend)]


async def load_task(b: Backend, task_id: str) -> Any:
    if not task_id or len(task_id) > 256 or any(c in task_id for c in " .*>\t\r\n"):
        raise ApiError(400, "invalid_argument", f"task id {task_id!r} is invalid", reason="task_id_invalid",
                       field="id")
    try:
        return await b.producer.get(task_id)
    except TaskNotFoundError:
        raise ApiError(404, "not_found", f"task {task_id} does not exist", reason="task_not_found") from None


def remember(b: Backend, record: Any, before_ns: int) -> None:
    """Read your writes: index a task this server just changed, unless the store's stream already brought a
    version at least as new (the index follows the stream a moment later)."""
    entry = b.index.get(record.id)
    if entry is None or entry.updated_ns < before_ns:
        b.index.put_raw(msgspec.json.encode(record), before_ns)


@router.get("/healthz", response_model=models.Health, tags=["health"])
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "time": format_ns(now_ns())}


@router.get("/readyz", response_model=models.Readiness, tags=["health"],
            responses={503: {"model": models.Readiness}})
async def readyz(b: B) -> JSONResponse:
    connected = b.nc.is_connected
    tasks: dict[str, Any] = {"ok": connected and b.index.caught_up.is_set()}
    if not tasks["ok"]:
        tasks["error"] = "task index still loading" if connected else "no NATS connection"
    config: dict[str, Any] = {"ok": connected} if connected else {"ok": False, "error": "no NATS connection"}
    checks = {"tasks": tasks, "config": config}
    ready = all(c["ok"] for c in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/v1/info", response_model=models.Info, response_model_exclude_none=True, dependencies=[READ],
            responses=ERRORS, tags=["info"])
async def info(request: Request, b: B) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        running = version("jetbridge")
    except PackageNotFoundError:  # run from a source tree: asyncjobs says "dev" then
        running = "dev"
    out: dict[str, Any] = {"version": running,
                           "auth": "bearer" if request.app.state.tokens.enabled else "none",
                           "features": ["dead_letters", "pause", "handlers", "history", "events", "cursor"]}
    try:
        out["queue_count"] = len(await b.admin.names())
    except JetbridgeError:
        pass
    out["task_count"] = len(b.index)
    return out


@router.get("/v1/retry-policies", response_model=models.RetryPolicies, dependencies=[READ], responses=ERRORS,
            tags=["info"])
async def retry_policies() -> dict[str, Any]:
    return {"policies": convert.retry_policies()}


# tasks -----------------------------------------------------------------------------------------------------


async def _load_many(b: Backend, ids: list[str]) -> list[Any]:
    limiter = asyncio.Semaphore(32)

    async def one(task_id: str) -> Any:
        async with limiter:
            try:
                return await b.producer.get(task_id)
            except TaskNotFoundError:
                b.index.forget(task_id)
                return None
            except JetbridgeError:
                return None

    return [t for t in await asyncio.gather(*(one(i) for i in ids)) if t is not None]


@router.get("/v1/tasks", response_model=models.TaskListResponse, response_model_exclude_none=True,
            dependencies=[READ], responses={**ERRORS, 200: {"content": {"application/x-ndjson": {}}}},
            tags=["tasks"])
async def list_tasks(
    b: B,
    state: Annotated[list[str] | None, Query(max_length=20)] = None,
    queue: Annotated[str | None, Query(max_length=256)] = None,
    type: Annotated[str | None, Query(max_length=256)] = None,
    created_since: Annotated[str | None, Query(max_length=64, json_schema_extra=models.DATE_TIME)] = None,
    limit: Annotated[int, Query(ge=1, description="above 1000 is taken as 1000")] = 200,
    stream: Annotated[str | None, Query(max_length=16)] = None,
    cursor: Annotated[str | None, Query(max_length=32, description="Jetbridge: the previous page's cursor")] = None,
    order: Annotated[str, Query(pattern="^(oldest|newest)$", description="Jetbridge: oldest first (default)")] = "oldest",
    error: Annotated[str | None, Query(max_length=200, description="Jetbridge: text in the last error")] = None,
) -> Response:
    """Tasks from the index (no scan of the store): filters AND together, paged with ``cursor``."""
    since = convert.time_ns(created_since, "created_since")
    q = IndexQuery(states=frozenset(state) if state else None, queue=queue or None, type=type or None,
                   text=error.lower() if error else None, since_ns=since)
    if cursor is not None and not cursor.isdigit():
        raise ApiError(400, "invalid_argument", "cursor is not one this server handed out", reason="cursor_invalid",
                       field="cursor")
    page = b.index.page(q, limit=convert.list_limit(limit), cursor=cursor, newest_first=order == "newest")
    tasks = [t for t in await _load_many(b, [e.id for e in page.entries])
             if since is None or _created_ns(t.created) >= since]
    views = [models.task_view(t) for t in tasks]
    if stream == "ndjson":
        async def lines() -> AsyncIterator[bytes]:
            for v in views:
                yield msgspec.json.encode(v) + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")
    body: dict[str, Any] = {"tasks": views, "count": len(views), "total": b.index.count(q)}
    if page.cursor:
        body["cursor"] = page.cursor
    return JSONResponse(body)


def _created_ns(text: str) -> int:
    from jetbridge.internal import parse_ns

    try:
        return parse_ns(text)
    except ValueError:
        return 0


@router.post("/v1/tasks", status_code=201, response_model=models.Task, response_model_exclude_unset=True,
             dependencies=[PRODUCE], responses={**ERRORS, 200: {"model": models.Task}}, tags=["tasks"])
async def create_task(request: Request, body: models.TaskCreateRequest, b: B, response: Response,
                      idempotency_key: Annotated[str | None, Header(max_length=128)] = None) -> dict[str, Any]:
    """Enqueue a task (201 with ``Location``); a repeated ``Idempotency-Key`` answers 200 with the task as it is."""
    seen: dict[str, tuple[float, str]] = request.app.state.idempotency
    now = time.monotonic()
    for key in [k for k, (at, _) in seen.items() if now - at > IDEMPOTENCY_S]:
        del seen[key]
    if idempotency_key and idempotency_key in seen:
        response.status_code = 200
        return models.task_view(await load_task(b, seen[idempotency_key][1]))
    if body.dependencies:
        raise ApiError(400, "invalid_argument", "dependencies are not supported by Jetbridge",
                       reason="dependencies_unsupported", field="dependencies")
    data = convert.payload_bytes(body.payload, body.payload_base64)
    deadline = convert.time_ns(body.deadline, "deadline")
    from datetime import UTC, datetime

    before = now_ns()
    try:
        task_id = await b.producer.enqueue(
            body.type, data if data is not None else None, queue=body.queue or b.queue,
            max_tries=body.max_tries if body.max_tries is not None else 10,
            content_type="application/json" if body.payload is not None else None,
            deadline=datetime.fromtimestamp(deadline / NS, UTC) if deadline is not None else None)
    except DuplicateTaskError as exc:
        raise from_jetbridge(exc) from None
    if idempotency_key:
        seen[idempotency_key] = (now, task_id)
    response.headers["Location"] = f"/v1/tasks/{task_id}"
    record = await load_task(b, task_id)
    remember(b, record, before)
    return models.task_view(record)


@router.post("/v1/tasks/retry", response_model=models.BulkRetryResponse, response_model_exclude_none=True,
             dependencies=[PRODUCE], responses=ERRORS, tags=["tasks"])
async def bulk_retry(body: models.BulkRetryRequest, b: B) -> dict[str, Any]:
    """Retry 1 to 100 tasks, one after another; each item reports ok, not_found or failed."""
    if not body.ids:
        raise ApiError(400, "invalid_argument", "ids must list at least one task", reason="ids_required", field="ids")
    if len(body.ids) > 100:
        raise ApiError(400, "invalid_argument", "ids lists more than 100 tasks", reason="ids_too_many", field="ids")
    results = []
    for task_id in body.ids:
        if not re.fullmatch(models.TASK_ID, task_id) or len(task_id) > 256:  # never a wildcard lookup
            results.append({"id": task_id, "status": "failed", "error": "invalid task id"})
            continue
        try:
            before = now_ns()
            remember(b, await b.producer.retry(task_id), before)
            results.append({"id": task_id, "status": "ok"})
        except TaskNotFoundError:
            results.append({"id": task_id, "status": "not_found"})
        except JetbridgeError as exc:
            results.append({"id": task_id, "status": "failed", "error": str(exc)})
    return {"results": results}


@router.get("/v1/tasks/{id}", response_model=models.Task, response_model_exclude_unset=True, dependencies=[READ],
            responses=ERRORS, tags=["tasks"])
async def get_task(id: TaskId, b: B) -> dict[str, Any]:
    """One task, with Jetbridge's attempt ``history``."""
    return models.task_view(await load_task(b, id))


@router.delete("/v1/tasks/{id}", status_code=204, dependencies=[OPERATE], responses=ERRORS, tags=["tasks"])
async def delete_task(id: TaskId, b: B) -> Response:
    await load_task(b, id)
    await b.producer.delete(id)
    b.index.forget(id)
    return Response(status_code=204)


@router.post("/v1/tasks/{id}/retry", response_model=models.Task, response_model_exclude_unset=True,
             dependencies=[PRODUCE], responses=ERRORS, tags=["tasks"])
async def retry_task(id: TaskId, b: B) -> dict[str, Any]:
    await load_task(b, id)
    before = now_ns()
    record = await b.producer.retry(id)
    remember(b, record, before)
    return models.task_view(record)


@router.post("/v1/tasks/{id}/cancel", response_model=models.Task, response_model_exclude_unset=True,
             dependencies=[OPERATE], responses=ERRORS, tags=["tasks"])
async def cancel_task(id: TaskId, b: B) -> dict[str, Any]:
    """Jetbridge: cancel a task (it ends terminated; a running attempt is told to stop)."""
    await load_task(b, id)
    before = now_ns()
    record = await b.producer.cancel(id, reason="cancelled over the HTTP API")
    remember(b, record, before)
    return models.task_view(record)


# queues ----------------------------------------------------------------------------------------------------


def _check_queue_name(name: str) -> None:
    from jetbridge.internal import names

    if not names.is_valid_name(name) or len(name) > 256:
        raise ApiError(400, "invalid_argument", f"queue name {name!r} is invalid: use letters, digits, '_', '-', ':'",
                       reason="queue_name_invalid", field="name")


async def _queue(b: Backend, name: str) -> dict[str, Any]:
    _check_queue_name(name)
    info = await b.admin.info(name)
    dead = b.index.count(IndexQuery(states=dlq.DEAD_STATES, queue=name))
    return convert.queue_view(info, dead)


@router.get("/v1/queues", response_model=models.QueueList, response_model_exclude_none=True, dependencies=[READ],
            responses=ERRORS, tags=["queues"])
async def list_queues(b: B) -> dict[str, Any]:
    found = []
    for name in await b.admin.names():
        try:
            found.append(await _queue(b, name))
        except QueueNotFoundError:
            continue  # deleted meanwhile, or a stream without its consumer: not a queue to list
    return {"queues": found}


@router.post("/v1/queues", status_code=201, response_model=models.QueueInfo, response_model_exclude_none=True,
             dependencies=[OPERATE], responses=ERRORS, tags=["queues"])
async def create_queue(body: models.QueueCreateRequest, b: B) -> dict[str, Any]:
    if not body.name:
        raise ApiError(400, "invalid_argument", "name is required", reason="queue_name_required", field="name")
    _check_queue_name(body.name)
    if body.name in await b.admin.names():
        raise ApiError(409, "duplicate", f"queue {body.name} exists already", reason="queue_already_exists")
    max_age = convert.duration_ns(body.max_age, "max_age")
    run_time = convert.duration_ns(body.max_runtime, "max_runtime")
    config = QueueConfig(name=body.name, max_tries=body.max_tries if body.max_tries else -1,
                         max_run_time=run_time / NS if run_time else 3600.0,
                         max_concurrent=body.max_concurrent or 100, max_entries=body.max_entries or 0,
                         discard_old=bool(body.discard_old), max_age=max_age / NS if max_age else 0.0)
    await b.admin.add(config)
    return await _queue(b, body.name)


@router.get("/v1/queues/{name}", response_model=models.QueueInfo, response_model_exclude_none=True,
            dependencies=[READ], responses=ERRORS, tags=["queues"])
async def get_queue(name: Name, b: B) -> dict[str, Any]:
    return await _queue(b, name)


@router.delete("/v1/queues/{name}", status_code=204, dependencies=[OPERATE], responses=ERRORS, tags=["queues"])
async def delete_queue(name: Name, b: B) -> Response:
    _check_queue_name(name)
    await b.admin.delete(name)
    return Response(status_code=204)


@router.post("/v1/queues/{name}/purge", status_code=202, dependencies=[OPERATE], responses=ERRORS, tags=["queues"])
async def purge_queue(name: Name, b: B) -> Response:
    """Drop every waiting item of the queue (the task records stay)."""
    _check_queue_name(name)
    await b.admin.purge(name)
    return Response(status_code=202)


# schedules -------------------------------------------------------------------------------------------------


def _schedule_view(view: Any) -> dict[str, Any]:
    import base64

    d = view.doc
    out = {"name": d.name, "schedule": d.schedule, "queue": d.queue, "task_type": d.task_type,
           "created_at": d.created_at, "payload": base64.b64encode(d.payload).decode() if d.payload else None,
           "deadline": d.deadline or None, "max_tries": d.max_tries, "paused": d.paused,
           "next_fire": view.to_dict().get("next_fire") or None}
    return {k: v for k, v in out.items() if v is not None}


def _check_schedule_name(name: str) -> None:
    try:
        check_name(name)
    except JetbridgeError as exc:
        raise ApiError(400, "invalid_argument", str(exc), reason="schedule_invalid", field="name") from None


@router.get("/v1/schedules", response_model=models.ScheduleList, response_model_exclude_none=True,
            dependencies=[READ], responses=ERRORS, tags=["schedules"])
async def list_schedules(b: B) -> dict[str, Any]:
    return {"schedules": [_schedule_view(v) for v in await b.schedules.list()]}


@router.post("/v1/schedules", status_code=201, response_model=models.Schedule, response_model_exclude_none=True,
             dependencies=[OPERATE], responses=ERRORS, tags=["schedules"])
async def create_schedule(body: models.ScheduleCreateRequest, b: B) -> dict[str, Any]:
    _check_schedule_name(body.name)
    if not body.queue:
        raise ApiError(400, "invalid_argument", "queue is required", reason="queue_name_required")
    _check_queue_name(body.queue)
    data = convert.payload_bytes(body.payload, body.payload_base64)
    offset = convert.duration_ns(body.deadline_offset, "deadline_offset")
    if offset is not None and offset < 30 * NS:
        raise ApiError(400, "invalid_argument", "deadline_offset must be at least 30s", reason="schedule_invalid",
                       field="deadline_offset")
    try:
        await b.schedules.get(body.name)
        raise ApiError(409, "duplicate", f"schedule {body.name} exists already", reason="schedule_already_exists")
    except TaskNotFoundError:
        pass
    try:
        view = await b.schedules.add(body.name, body.schedule, body.task_type, data, queue=body.queue,
                                     max_tries=body.max_tries if body.max_tries is not None else 10,
                                     deadline=offset / NS if offset else None,
                                     content_type="application/json" if body.payload is not None else None)
    except JetbridgeError as exc:
        if isinstance(exc, ValueError):
            raise ApiError(400, "invalid_argument", str(exc), reason="schedule_invalid") from None
        raise
    return _schedule_view(view)


@router.get("/v1/schedules/{name}", response_model=models.Schedule, response_model_exclude_none=True,
            dependencies=[READ], responses=ERRORS, tags=["schedules"])
async def get_schedule(name: ScheduleName, b: B) -> dict[str, Any]:
    _check_schedule_name(name)
    try:
        return _schedule_view(await b.schedules.get(name))
    except TaskNotFoundError as exc:
        raise ApiError(404, "not_found", str(exc), reason="schedule_not_found") from None


@router.delete("/v1/schedules/{name}", status_code=204, dependencies=[OPERATE], responses=ERRORS, tags=["schedules"])
async def delete_schedule(name: ScheduleName, b: B) -> Response:
    _check_schedule_name(name)
    try:
        await b.schedules.get(name)
    except TaskNotFoundError as exc:
        raise ApiError(404, "not_found", str(exc), reason="schedule_not_found") from None
    await b.schedules.delete(name)
    return Response(status_code=204)
