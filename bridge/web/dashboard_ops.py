"""The dashboard's schedules page (next fires, pause, resume, trigger now) and the dead letters' bulk actions with
a preview: the preview lists what matches the filters now, and its buttons act on exactly those ids, so what is
replayed or deleted is what the operator saw (a dead letter replayed meanwhile is not deleted).

Same rules as bridge/web/dashboard.py: pages show only what the role allows; actions are POSTs with the
``X-Jetbridge-UI`` header and check the role again.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from jetbridge.internal import JetbridgeError, TaskNotFoundError, format_ns, now_ns
from starlette.routing import Router

from .. import dlq
from .dashboard import _act, _backend, _filters, _login, _page, _role, _said, templates
from .models import TASK_ID
from .ops import BULK_MAX, delete_dead, select_dead

ui = Router()
#: upcoming fires shown per schedule
NEXT_FIRES = 3
#: ids listed in a preview (all of them are acted on)
PREVIEW_SHOWN = 20


def next_fires(view: Any, now: int, n: int = NEXT_FIRES) -> list[str]:
    """The schedule's next ``n`` fire times after now (none while paused)."""
    doc = view.doc
    if doc.paused:
        return []
    out, t = [], max(now, view.state.cursor, doc.start_ns)
    for _ in range(n):
        t = doc.spec.next_after(t)
        out.append(format_ns(t, digits=0))
    return out


async def schedules_page(request: Request) -> Response:
    role = _role(request)
    if role is None:
        return _login(request)
    b = _backend(request)
    now = now_ns()
    rows = []
    for view in await b.schedules.list():
        d = view.to_dict()
        d["next"] = next_fires(view, now)
        rows.append(d)
    return _page(request, "schedules.html", role, schedules=rows)


async def schedule_action(request: Request) -> Response:
    verb, name = request.path_params["verb"], request.path_params["name"]
    got = await _act(request, "operator")
    if isinstance(got, HTMLResponse):
        return got
    b, _ = got
    try:
        if verb == "pause":
            await b.schedules.pause(name, "paused from the dashboard")
        elif verb == "resume":
            await b.schedules.resume(name)
        elif verb == "trigger":
            return _said(f"schedule {name} fired task {await b.schedules.trigger(name)}")
        else:
            return HTMLResponse("unknown action", 404)
    except (TaskNotFoundError, JetbridgeError) as exc:
        return _said(str(exc), ok=False)
    return _said(f"schedule {name} {verb}d")


async def dead_preview(request: Request) -> Response:
    """What the filters select now, with buttons acting on exactly those ids (operators only)."""
    role = _role(request)
    if role is None:
        return _login(request)
    b = _backend(request)
    f = _filters(request)
    if not (f["queue"] or f["type"] or f["error"]):
        total = b.index.count(dlq.query())
        ids = b.index.ids(dlq.query())[:BULK_MAX]
    else:
        ids = select_dead(b, ids=None, queue=f["queue"], task_type=f["type"], error=f["error"])
        total = b.index.count(dlq.query(queue=f["queue"] or None, task_type=f["type"] or None,
                                        text=f["error"] or None))
    shown = [e for e in (b.index.get(i) for i in ids[:PREVIEW_SHOWN]) if e is not None]
    response = templates.TemplateResponse(request, "dead_preview.html", {
        "ids": ids, "total": total, "shown": shown, "ids_text": "\n".join(ids), "max": BULK_MAX,
        "can_operate": role == "operator"})
    return response


async def dead_bulk(request: Request) -> Response:
    verb = request.path_params["verb"]
    got = await _act(request, "operator")
    if isinstance(got, HTMLResponse):
        return got
    b, _ = got
    form = parse_qs((await request.body()).decode(errors="replace"))
    ids = [i for i in "\n".join(form.get("ids", [])).split("\n") if re.fullmatch(TASK_ID, i)][:BULK_MAX]
    if not ids:
        return _said("nothing selected", ok=False)
    if verb == "delete":
        removed = await delete_dead(b, ids)
        return _said(f"deleted {len(removed)} of {len(ids)} dead letters")
    if verb == "replay":
        done = 0
        for task_id in ids:
            done += (await dlq.replay(b.nc, b.rq, task_id)).done
        return _said(f"replayed {done} of {len(ids)} dead letters")
    return HTMLResponse("unknown action", 404)


ui.add_route("/ui/schedules", schedules_page)
ui.add_route("/ui/schedules/{name}/{verb}", schedule_action, methods=["POST"])
ui.add_route("/ui/dead-letters/preview", dead_preview)
ui.add_route("/ui/dead-letters/bulk/{verb}", dead_bulk, methods=["POST"])


def mount(app: FastAPI) -> None:
    for route in ui.routes:
        app.router.routes.append(route)
