"""The dashboard's pages over HTTP (the browser tests drive them in Chromium): they render from the index and the
store, show only what the role allows, and refuse actions that do not come from the dashboard."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.harness import Harness

from .conftest import TOKENS, Served

pytestmark = pytest.mark.anyio
UI = {"X-Jetbridge-UI": "1"}


async def test_pages_render(web: Served, h: Harness) -> None:
    async with httpx.AsyncClient(base_url=web.url) as c:
        task = (await c.post("/v1/tasks", json={"type": "dash:x", "queue": h.queue, "payload": {"k": "<b>"}})).json()
        home = await c.get("/")
        assert home.status_code == 200 and h.queue in home.text and "/static/htmx.min.js" in home.text
        assert (await c.get(f"/ui/queues/{h.queue}")).status_code == 200
        listed = await c.get("/ui/tasks", params={"queue": h.queue})
        assert task["id"] in listed.text
        page = await c.get(f"/ui/tasks/{task['id']}")
        assert page.status_code == 200 and "&lt;b&gt;" in page.text and "<b>" not in page.text.split("payload")[-1]
        assert (await c.get("/ui/dead-letters")).status_code == 200
        assert (await c.get("/ui/tasks/nope")).status_code == 404
        assert (await c.get("/ui/queues/nope")).status_code == 404
        for asset in ("/static/htmx.min.js", "/static/app.js", "/static/app.css"):
            assert (await c.get(asset)).status_code == 200


async def test_actions_need_the_dashboard_header(web: Served, h: Harness) -> None:
    async with httpx.AsyncClient(base_url=web.url) as c:
        assert (await c.post(f"/ui/queues/{h.queue}/pause")).status_code == 403
        r = await c.post(f"/ui/queues/{h.queue}/pause", headers=UI)
        assert "paused" in r.text
        assert (await c.get(f"/v1/queues/{h.queue}")).json()["paused"] is True
        await c.post(f"/ui/queues/{h.queue}/resume", headers=UI)
        assert (await c.get(f"/v1/queues/{h.queue}")).json()["paused"] is False


async def test_roles_in_the_dashboard(web_auth: Served, h: Harness) -> None:
    async with httpx.AsyncClient(base_url=web_auth.url) as c:
        login = await c.get("/")
        assert login.status_code == 401 and "Sign in" in login.text
        c.cookies.set("jb_token", TOKENS["read"])
        page = await c.get(f"/ui/queues/{h.queue}")
        assert page.status_code == 200 and 'id="pause"' not in page.text
        r: Any = await c.post(f"/ui/queues/{h.queue}/pause", headers=UI)
        assert "needs the operator role" in r.text
        c.cookies.set("jb_token", TOKENS["operator"])
        assert 'id="pause"' in (await c.get(f"/ui/queues/{h.queue}")).text
