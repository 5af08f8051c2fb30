"""Jetbridge's additions to the REST API: dead letters and replay, pause and resume, handlers and dispatchers online
(NATS micro discovery) and a live stream of task lifecycle events (Server-Sent Events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from jetbridge.internal import format_ns, names, now_ns
from sse_starlette.sse import EventSourceResponse

from .. import dlq, pause
from . import models
from .api import ERRORS, OPERATE, READ, B, Name, _check_queue_name
from .convert import list_limit, time_ns
from .errors import ApiError

router = APIRouter()


@router.get("/v1/dead-letters", response_model=models.DeadLetterList, response_model_exclude_none=True, dependencies=[READ], responses=ERRORS, tags=["dead letters"])
async def dead_letters(
    b: B, queue: Annotated[str | None, Query(max_length=256)] = None,
    type: Annotated[str | None, Query(max_length=256)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, description="above 1000 is taken as 1000")] = 100, cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """Tasks that ended terminated, expired or unreachable, newest first, from the index."""
    q = dlq.query(queue=queue or None, task_type=type or None, text=error or None)
    if cursor is not None and not cursor.isdigit():
        raise ApiError(400, "invalid_argument", "cursor is not one this server handed out", reason="cursor_invalid",
                       field="cursor")
    page = b.index.page(q, limit=list_limit(limit), cursor=cursor, newest_first=True)
    rows = [{"id": e.id, "state": e.state, "type": e.type, "queue": e.queue, "code": e.code or None,
             "error": e.error or None, "updated": format_ns(e.updated_ns) if e.updated_ns else None}
            for e in page.entries]
    out: dict[str, Any] = {"dead_letters": [{k: v for k, v in r.items() if v is not None} for r in rows],
                           "count": len(rows), "total": b.index.count(q)}
    if page.cursor:
        out["cursor"] = page.cursor
    return out


@router.post("/v1/dead-letters/replay", response_model=models.ReplayResponse, response_model_exclude_none=True,
             dependencies=[OPERATE], responses=ERRORS, tags=["dead letters"])
async def replay(body: models.ReplayRequest, b: B) -> dict[str, Any]:
    """Run dead letters again in place (same id, history kept): the listed ``ids``, or all matching the filters."""
    if body.ids:
        ids = body.ids
    elif body.queue or body.type:
        ids = b.index.ids(dlq.query(queue=body.queue, task_type=body.type))[:1000]
    else:
        raise ApiError(400, "invalid_argument", "give ids, or a queue or type to select dead letters",
                       reason="ids_required", field="ids")
    results = []
    for task_id in ids:
        r = await dlq.replay(b.nc, b.rq, task_id, queue=body.to_queue, dry_run=body.dry_run)
        results.append({"id": task_id, "status": "ok" if r.done else "skipped", "error": r.why or None})
    return {"matched": len(ids), "replayed": sum(r["status"] == "ok" for r in results), "results": results}


def _pause_view(p: pause.PauseState) -> dict[str, Any]:
    return {"queue": p.queue, "paused": p.paused, "until": p.until or None, "note": p.note or None,
            "since": p.since or None}


@router.get("/v1/queues/{name}/pause", response_model=models.PauseState, response_model_exclude_none=True,
            dependencies=[READ], responses=ERRORS, tags=["queues"])
async def pause_state(name: Name, b: B) -> dict[str, Any]:
    _check_queue_name(name)
    return _pause_view(await pause.state(b.rq, name))


@router.post("/v1/queues/{name}/pause", response_model=models.PauseState, response_model_exclude_none=True,
             dependencies=[OPERATE], responses=ERRORS, tags=["queues"])
async def pause_queue(name: Name, b: B, body: models.PauseRequest | None = None) -> dict[str, Any]:
    """Stop dispatching from the queue (until ``until``, or until resumed); tasks keep arriving."""
    _check_queue_name(name)
    body = body or models.PauseRequest(until=None, note="")
    until = time_ns(body.until, "until")
    now = now_ns()
    if until is not None and until <= now:
        raise ApiError(400, "invalid_argument", "until must be in the future", reason="invalid_time", field="until")
    return _pause_view(await pause.pause(b.rq, name, until_ns=until, note=body.note, now_ns=now))


@router.post("/v1/queues/{name}/resume", response_model=models.PauseState, response_model_exclude_none=True,
             dependencies=[OPERATE], responses=ERRORS, tags=["queues"])
async def resume_queue(name: Name, b: B) -> dict[str, Any]:
    _check_queue_name(name)
    return _pause_view(await pause.resume(b.rq, name))


@router.get("/v1/handlers", response_model=models.HandlerList, response_model_exclude_none=True,
            dependencies=[READ], responses=ERRORS, tags=["handlers"])
async def handlers(b: B) -> dict[str, Any]:
    """Handler service instances online (``$SRV.INFO`` and ``$SRV.STATS``): service, version, language (from the
    ``jetbridge.sdk`` metadata), task types, counters. Dispatchers are listed at ``/v1/dispatchers``."""
    return {"handlers": await b.handlers()}


@router.get("/v1/dispatchers", response_model=models.DispatcherList, response_model_exclude_none=True,
            dependencies=[READ], responses=ERRORS, tags=["handlers"])
async def dispatchers(b: B) -> dict[str, Any]:
    """Dispatchers online (``jetbridge-dispatcher`` micro services): queues served, attempts in flight, uptime."""
    return {"dispatchers": await b.dispatchers()}


@router.get("/v1/limits", response_model=models.LimitList, response_model_exclude_none=True,
            dependencies=[READ], responses=ERRORS, tags=["limits"])
async def limits(b: B) -> dict[str, Any]:
    """Global limits in force (``jetbridge limit set``; docs/flow-control.md) with the permits held now. Read-only
    here: limits are set and deleted with the CLI."""
    from ..limit_store import limit_rows

    return {"limits": await limit_rows(b.nc)}


@router.get("/v1/events", dependencies=[READ], responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
            tags=["events"])
async def events(request: Request, b: B,
                 task: Annotated[str | None, Query(max_length=256, pattern=r"^[^.*> ]+$")] = None) -> Any:
    """Server-Sent Events: every task lifecycle event (``CHORIA_AJ.E.task_state.>``), or one task's."""
    subject = names.task_state_event_subject(task) if task else f"{names.EVENT_SUBJECT_PREFIX}.task_state.>"
    inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)

    async def on_msg(msg: Any) -> None:
        if not inbox.full():  # a slow browser loses events rather than the server's memory
            inbox.put_nowait(msg.data)

    sub = await b.nc.subscribe(subject, cb=on_msg)
    await b.nc.flush()  # subscribed at the server before the client sees the stream open

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                data = await inbox.get()
                yield {"event": "task_state", "data": data.decode(errors="replace")}
        finally:
            await sub.unsubscribe()

    return EventSourceResponse(stream(), ping=15)
