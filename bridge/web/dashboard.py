"""The dashboard: server-rendered pages (Jinja2) made live with htmx and the API's event stream.

Why this stack: the pages are HTML built from the same backend as the API, so there is no second client to
build, version or keep in sync, no build step, and the only browser code is htmx (vendored, 52 KB, see
static/htmx.LICENSE) plus ~40 lines in static/app.js. Everything is served by the process: it works offline.

Roles: the pages show only the actions the caller's role may take, and every action checks the role again.
Actions are POSTs that must carry the ``X-Jetbridge-UI`` header (htmx sends it; another site's form cannot),
so a signed-in browser cannot be made to act by a cross-site request.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jetbridge.internal import NS, JetbridgeError, TaskNotFoundError, TaskState, format_ns, now_ns
from markupsafe import escape
from starlette.routing import Router

from .. import dlq, pause
from ..index import Query
from . import charts
from .api import _queue, remember
from .auth import ROLES, role_of_request
from .backend import Backend
from .errors import ApiError
from .models import TASK_ID
from .online import group_services

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def duration(seconds: float | None) -> str:
    """``3d 4h``, ``2h 5m``, ``4m 10s``, ``12s``: an uptime at a glance."""
    if seconds is None:
        return ""
    s = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {s % size // sub_size}{sub}"
    return f"{s}s"


templates.env.filters["duration"] = duration
ui = Router()
WINDOWS = [("15m", "15 minutes"), ("1h", "1 hour"), ("24h", "24 hours"), ("168h", "7 days")]
_WINDOW_NS = {"15m": 900 * NS, "1h": 3600 * NS, "24h": 86400 * NS, "168h": 7 * 86400 * NS}
PAGE = 50


def _backend(request: Request) -> Backend:
    return request.app.state.backend  # type: ignore[no-any-return]


def _role(request: Request) -> str | None:
    try:
        return role_of_request(request, None)
    except ApiError:
        return None


def _page(request: Request, name: str, role: str, events: str = "/v1/events", **values: Any) -> HTMLResponse:
    can = {"can_produce": ROLES.index(role) >= 1, "can_operate": ROLES.index(role) >= 2}
    return templates.TemplateResponse(request, name, {"role": role, "events_url": events, **can, **values})


def _login(request: Request) -> HTMLResponse:
    message = "That token is not known." if request.cookies.get("jb_token") else ""
    response = templates.TemplateResponse(request, "login.html", {"role": "signed out", "events_url": "",
                                                                 "message": message}, status_code=401)
    return response


async def overview(request: Request) -> Response:
    role = _role(request)
    if role is None:
        return _login(request)
    b = _backend(request)
    queues = []
    for name in await b.admin.names():
        try:
            queues.append(await _queue(b, name))
        except JetbridgeError:
            continue
    counts = {s.value: b.index.count(Query(states=frozenset({s.value}))) for s in TaskState}
    handlers, dispatchers = await b.online(window=0.3)
    hour, by_queue = b.hour.get(b.index, now_ns())
    for q in queues:
        series = by_queue.get(q["name"], charts.Series())
        q.update(per_minute=series.per_minute, failure_share=series.failure_share,
                 chart=charts.bars(series, width=120, height=24, label=f"queue {q['name']}, last hour"))
    return _page(request, "overview.html", role, queues=queues, services=group_services(handlers),
                 dispatchers=dispatchers,
                 hour=hour, hour_chart=charts.bars(hour, width=720, height=90, label="finished a minute, last hour"),
                 states=[(s, n) for s, n in counts.items() if n])


async def queue_page(request: Request) -> Response:
    role = _role(request)
    if role is None:
        return _login(request)
    b = _backend(request)
    name = request.path_params["name"]
    try:
        q = await _queue(b, name)
        p = await pause.state(b.rq, name)
    except (JetbridgeError, ApiError):
        return HTMLResponse(f"<p>queue {escape(name)} does not exist. <a href='/'>Overview</a></p>", 404)
    return _page(request, "queue.html", role, q=q, pause=p)


def _filters(request: Request) -> dict[str, str]:
    p = request.query_params
    return {k: p.get(k, "").strip() for k in ("state", "queue", "type", "error", "since", "cursor")}


async def tasks_page(request: Request, dead: bool = False) -> Response:
    role = _role(request)
    if role is None:
        return _login(request)
    b = _backend(request)
    f = _filters(request)
    since = now_ns() - _WINDOW_NS[f["since"]] if f["since"] in _WINDOW_NS else None
    if dead:
        q = dlq.query(queue=f["queue"] or None, task_type=f["type"] or None, text=f["error"] or None, since_ns=since)
    else:
        q = Query(states=frozenset({f["state"]}) if f["state"] else None, queue=f["queue"] or None,
                  type=f["type"] or None, text=f["error"].lower() or None, since_ns=since)
    cursor = f["cursor"] if f["cursor"].isdigit() else None
    page = b.index.page(q, limit=PAGE, cursor=cursor, newest_first=True)
    entries = [{"id": e.id, "type": e.type, "queue": e.queue, "state": e.state, "code": e.code, "error": e.error,
                "changed": format_ns(e.updated_ns, digits=0) if e.updated_ns else ""} for e in page.entries]
    next_query = urlencode({**{k: v for k, v in f.items() if v and k != "cursor"}, "cursor": page.cursor or ""})
    return _page(request, "tasks.html", role, entries=entries, total=b.index.count(q), f=f, dead=dead,
                 cursor=page.cursor, next_query=next_query, all_states=[s.value for s in TaskState],
                 windows=WINDOWS, heading="Dead letters" if dead else "Tasks")


async def dead_page(request: Request) -> Response:
    return await tasks_page(request, dead=True)


def _payload(t: Any) -> tuple[str, str]:
    if t.payload is None:
        return "none", ""
    if t.content_type in ("", "application/json"):
        try:
            return "JSON", json.dumps(json.loads(t.payload), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    data: bytes = t.payload[:4096]
    rows = [f"{i:08x}  {data[i:i + 16].hex(' ')}" for i in range(0, len(data), 16)]
    return f"{t.content_type or 'bytes'}, {len(t.payload)} bytes (hex)", "\n".join(rows)


async def task_page(request: Request) -> Response:
    role = _role(request)
    if role is None:
        return _login(request)
    b = _backend(request)
    task_id = request.path_params["id"]
    try:
        if not re.fullmatch(TASK_ID, task_id):  # a wildcard would read whichever task matches last
            raise TaskNotFoundError(task_id)
        t = await b.producer.get(task_id)
    except (TaskNotFoundError, JetbridgeError):
        return HTMLResponse(f"<p>task {escape(task_id)} does not exist. <a href='/ui/tasks'>Tasks</a></p>", 404)
    kind, payload = _payload(t)
    result = None
    if t.result is not None:
        value = t.result.value()
        result = json.dumps(value, indent=2, ensure_ascii=False) if not isinstance(value, bytes) else \
            base64.b64encode(value).decode()
    attempts = [msgspec.structs.asdict(a) for a in (t.history.attempts if t.history else [])]
    return _page(request, "task.html", role, events=f"/v1/events?task={t.id}", t=t, payload=payload,
                 payload_kind=kind, result=result, attempts=list(reversed(attempts)),
                 dropped=t.history.dropped if t.history else 0)


# actions ------------------------------------------------------------------------------------------------------


def _said(text: str, ok: bool = True) -> HTMLResponse:
    body = f"<span class='{'ok' if ok else 'error'}'>{escape(text)}</span>"
    return HTMLResponse(body)  # static/app.js refreshes the page's live part once the answer is shown


async def _act(request: Request, need: str) -> tuple[Backend, str] | HTMLResponse:
    if request.headers.get("x-jetbridge-ui") != "1":
        return HTMLResponse("dashboard actions come from the dashboard", 403)
    role = _role(request)
    if role is None or ROLES.index(role) < ROLES.index(need):
        return _said(f"this needs the {need} role", ok=False)
    return _backend(request), role


async def task_action(request: Request) -> Response:
    verb, task_id = request.path_params["verb"], request.path_params["id"]
    need = {"retry": "producer"}.get(verb, "operator")
    got = await _act(request, need)
    if isinstance(got, HTMLResponse):
        return got
    b, _ = got
    if not re.fullmatch(TASK_ID, task_id):  # ">" would make delete purge every task
        return _said(f"{task_id!r} is not a task id", ok=False)
    before = now_ns()
    try:
        if verb == "retry":
            remember(b, await b.producer.retry(task_id), before)
        elif verb == "cancel":
            remember(b, await b.producer.cancel(task_id, reason="cancelled from the dashboard"), before)
        elif verb == "delete":
            await b.producer.delete(task_id)
            b.index.forget(task_id)
        elif verb == "replay":
            r = await dlq.replay(b.nc, b.rq, task_id)
            if not r.done:
                return _said(f"not replayed: {r.why}", ok=False)
        else:
            return HTMLResponse("unknown action", 404)
    except JetbridgeError as exc:
        return _said(str(exc), ok=False)
    done = {"retry": "retried", "cancel": "cancelled", "delete": "deleted", "replay": "replayed"}[verb]
    return _said(f"task {task_id} {done}")


async def queue_action(request: Request) -> Response:
    verb, name = request.path_params["verb"], request.path_params["name"]
    got = await _act(request, "operator")
    if isinstance(got, HTMLResponse):
        return got
    b, _ = got
    try:
        if verb == "pause":
            await pause.pause(b.rq, name, note="paused from the dashboard", now_ns=now_ns())
        elif verb == "resume":
            await pause.resume(b.rq, name)
        elif verb == "purge":
            n = await b.admin.purge(name)
            return _said(f"queue {name}: {n} waiting items dropped")
        else:
            return HTMLResponse("unknown action", 404)
    except JetbridgeError as exc:
        return _said(str(exc), ok=False)
    return _said(f"queue {name} {verb}d")


ui.add_route("/", overview)
ui.add_route("/ui/queues/{name}", queue_page)
ui.add_route("/ui/tasks", tasks_page)
ui.add_route("/ui/dead-letters", dead_page)
ui.add_route("/ui/tasks/{id}", task_page)
ui.add_route("/ui/tasks/{id}/{verb}", task_action, methods=["POST"])
ui.add_route("/ui/queues/{name}/{verb}", queue_action, methods=["POST"])


def mount(app: FastAPI) -> None:
    from . import dashboard_ops

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for route in ui.routes:
        app.router.routes.append(route)
    dashboard_ops.mount(app)
