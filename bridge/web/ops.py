"""Operator actions beyond asyncjobs' API: pause, resume and trigger a schedule; delete dead letters in bulk
(with a dry run that previews what matches). The dashboard's schedules and dead-letter pages use the same rules."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from jetbridge.internal import TaskNotFoundError

from .. import dlq
from . import models
from .api import ERRORS, OPERATE, B, ScheduleName, _check_schedule_name, _schedule_view
from .backend import Backend
from .errors import ApiError

router = APIRouter()
#: dead letters one bulk call selects at most (as replay)
BULK_MAX = 1000


def select_dead(b: Backend, *, ids: list[str] | None, queue: str | None, task_type: str | None,
                error: str | None) -> list[str]:
    """The dead letters a bulk action applies to: the given ids, or the first :data:`BULK_MAX` matching."""
    if ids:
        return list(dict.fromkeys(ids))[:BULK_MAX]
    if not (queue or task_type or error):
        raise ApiError(400, "invalid_argument", "give ids, or a queue, type or error text to select dead letters",
                       reason="ids_required", field="ids")
    return b.index.ids(dlq.query(queue=queue or None, task_type=task_type or None, text=error or None))[:BULK_MAX]


async def delete_dead(b: Backend, ids: list[str]) -> list[str]:
    """Remove those of ``ids`` that are still dead letters (one replayed since the preview is kept)."""
    removed = await dlq.delete(b.rq, ids, only_dead=True)
    for task_id in removed:
        b.index.forget(task_id)
    return removed


@router.post("/v1/dead-letters/delete", response_model=models.DeadLetterDeleteResponse, dependencies=[OPERATE],
             responses=ERRORS, tags=["dead letters"])
async def delete_dead_letters(body: models.DeadLetterDeleteRequest, b: B) -> dict[str, Any]:
    """Delete dead letters for good: the listed ``ids``, or those matching ``queue``/``type``/``error``.
    With ``dry_run`` nothing is removed and ``ids`` previews the selection."""
    ids = select_dead(b, ids=body.ids, queue=body.queue, task_type=body.type, error=body.error)
    if body.dry_run:
        return {"matched": len(ids), "deleted": 0, "ids": ids}
    removed = await delete_dead(b, ids)
    return {"matched": len(ids), "deleted": len(removed), "ids": removed}


async def _schedule_change(b: Backend, name: str, verb: str, note: str = "") -> dict[str, Any]:
    _check_schedule_name(name)
    try:
        view = await (b.schedules.pause(name, note) if verb == "pause" else b.schedules.resume(name, note))
    except TaskNotFoundError as exc:
        raise ApiError(404, "not_found", str(exc), reason="schedule_not_found") from None
    return _schedule_view(view)


@router.post("/v1/schedules/{name}/pause", response_model=models.Schedule, response_model_exclude_none=True,
             dependencies=[OPERATE], responses=ERRORS, tags=["schedules"])
async def pause_schedule(name: ScheduleName, b: B,
                         body: Annotated[models.SchedulePauseRequest | None, Body()] = None) -> dict[str, Any]:
    """Stop firing; slots passed while paused are not fired later."""
    return await _schedule_change(b, name, "pause", body.note if body else "")


@router.post("/v1/schedules/{name}/resume", response_model=models.Schedule, response_model_exclude_none=True,
             dependencies=[OPERATE], responses=ERRORS, tags=["schedules"])
async def resume_schedule(name: ScheduleName, b: B) -> dict[str, Any]:
    """Fire again, from the next slot after now."""
    return await _schedule_change(b, name, "resume")


@router.post("/v1/schedules/{name}/trigger", response_model=models.ScheduleTriggered, dependencies=[OPERATE],
             responses=ERRORS, tags=["schedules"])
async def trigger_schedule(name: ScheduleName, b: B) -> dict[str, Any]:
    """Fire the schedule's task now, outside its slots."""
    _check_schedule_name(name)
    try:
        return {"name": name, "task_id": await b.schedules.trigger(name)}
    except TaskNotFoundError as exc:
        raise ApiError(404, "not_found", str(exc), reason="schedule_not_found") from None
