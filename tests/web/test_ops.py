"""Schedules' pause, resume and trigger; dead letters' bulk delete with a dry-run preview; the overview's charts of
the last hour; the new pages over HTTP with each role (read-only sees no action buttons)."""

from __future__ import annotations

from typing import Any

import httpx
import jetbridge
import pytest
from jetbridge._timeutil import NS

from bridge.index import Entry
from bridge.web import charts
from tests.harness import Harness

from .conftest import TOKENS, Served
from .test_api import envelope, eventually

pytestmark = pytest.mark.anyio
UI = {"X-Jetbridge-UI": "1"}


async def make_dead_letters(h: Harness, n: int) -> list[str]:
    async def refuse(task: jetbridge.Task) -> Any:
        raise jetbridge.Terminate("bad input")

    async with h.service({f"{h.unique}:bad": refuse}), h.dispatcher():
        ids = [await h.producer.enqueue(f"{h.unique}:bad", queue=h.queue) for _ in range(n)]
        for task_id in ids:
            assert (await h.producer.wait(task_id, timeout=30)).state == "terminated"
    return ids


async def test_schedule_pause_resume_and_trigger(web: Served, h: Harness) -> None:
    name = f"s{h.unique}"
    async with httpx.AsyncClient(base_url=web.url) as c:
        body = {"name": name, "schedule": "@every 1h", "queue": h.queue, "task_type": f"{h.unique}:r"}
        assert (await c.post("/v1/schedules", json=body)).status_code == 201
        paused = (await c.post(f"/v1/schedules/{name}/pause", json={"note": "maintenance"})).json()
        assert paused["paused"] is True and "next_fire" not in paused
        resumed = (await c.post(f"/v1/schedules/{name}/resume")).json()
        assert not resumed.get("paused") and resumed["next_fire"]
        fired = (await c.post(f"/v1/schedules/{name}/trigger")).json()
        assert fired["name"] == name
        task = (await c.get(f"/v1/tasks/{fired['task_id']}")).json()
        assert task["type"] == f"{h.unique}:r" and task["queue"] == h.queue
        envelope(await c.post(f"/v1/schedules/n{name}/pause"), 404, "not_found", "schedule_not_found")
        envelope(await c.post(f"/v1/schedules/n{name}/trigger"), 404, "not_found", "schedule_not_found")
        envelope(await c.post(f"/v1/schedules/{name}/pause", json={"note": 1}), 400, "invalid_argument")
        page = (await c.get("/ui/schedules")).text
        assert f'data-schedule="{name}"' in page and 'class="trigger"' in page
        assert (await c.delete(f"/v1/schedules/{name}")).status_code == 204


async def test_dead_letters_bulk_delete_with_a_preview(web: Served, h: Harness) -> None:
    ids = await make_dead_letters(h, 3)
    async with httpx.AsyncClient(base_url=web.url) as c:
        await eventually(c, "/v1/dead-letters", {"queue": h.queue}, lambda d: d["total"] == 3)
        preview = (await c.post("/v1/dead-letters/delete", json={"queue": h.queue, "dry_run": True})).json()
        assert preview == {"matched": 3, "deleted": 0, "ids": ids}
        assert [(await c.get(f"/v1/tasks/{i}")).status_code for i in ids] == [200] * 3  # a dry run removes nothing
        one = (await c.post("/v1/dead-letters/delete", json={"ids": [ids[0]]})).json()
        assert one == {"matched": 1, "deleted": 1, "ids": [ids[0]]}
        envelope(await c.get(f"/v1/tasks/{ids[0]}"), 404, "not_found")
        rest = (await c.post("/v1/dead-letters/delete", json={"queue": h.queue})).json()
        assert rest["deleted"] == 2 and sorted(rest["ids"]) == sorted(ids[1:])
        assert (await c.get("/v1/dead-letters", params={"queue": h.queue})).json()["total"] == 0
        envelope(await c.post("/v1/dead-letters/delete", json={}), 400, "invalid_argument", "ids_required")
        envelope(await c.post("/v1/dead-letters/delete", json={"ids": ["x"] * 1001}), 400, "invalid_argument")


async def test_a_task_that_is_not_dead_is_not_deleted(web: Served, h: Harness) -> None:
    task_id = await h.producer.enqueue(f"{h.unique}:alive", queue=h.queue)
    async with httpx.AsyncClient(base_url=web.url) as c:
        r = (await c.post("/v1/dead-letters/delete", json={"ids": [task_id]})).json()
        assert r["deleted"] == 0 and (await c.get(f"/v1/tasks/{task_id}")).status_code == 200


async def test_dashboard_preview_acts_on_the_previewed_ids(web: Served, h: Harness) -> None:
    ids = await make_dead_letters(h, 2)
    async with httpx.AsyncClient(base_url=web.url) as c:
        await eventually(c, "/v1/dead-letters", {"queue": h.queue}, lambda d: d["total"] == 2)
        preview = (await c.get("/ui/dead-letters/preview", params={"queue": h.queue})).text
        assert "<strong>2</strong>" in preview and all(i in preview for i in ids) and 'id="bulk-delete"' in preview
        r = await c.post("/ui/dead-letters/bulk/delete", headers=UI, content=f"ids={ids[0]}")
        assert "deleted 1 of 1" in r.text
        assert (await c.post("/ui/dead-letters/bulk/delete", content=f"ids={ids[1]}")).status_code == 403
        assert (await c.get(f"/v1/tasks/{ids[1]}")).status_code == 200


async def test_read_only_sees_no_action_on_any_page(web_auth: Served, h: Harness) -> None:
    name = f"s{h.unique}"
    operator = {"Authorization": f"Bearer {TOKENS['operator']}"}
    async with httpx.AsyncClient(base_url=web_auth.url) as c:
        body = {"name": name, "schedule": "@every 1h", "queue": h.queue, "task_type": "x"}
        assert (await c.post("/v1/schedules", json=body, headers=operator)).status_code == 201
        task = (await c.post("/v1/tasks", json={"type": "x", "queue": h.queue}, headers=operator)).json()
        c.cookies.set("jb_token", TOKENS["read"])
        pages = ["/", f"/ui/queues/{h.queue}", "/ui/tasks", "/ui/dead-letters", f"/ui/tasks/{task['id']}",
                 "/ui/schedules", f"/ui/dead-letters/preview?queue={h.queue}"]
        for path in pages:
            r = await c.get(path)
            assert r.status_code == 200 and "hx-post" not in r.text, path
        assert f'data-schedule="{name}"' in (await c.get("/ui/schedules")).text
        r = await c.post(f"/ui/schedules/{name}/trigger", headers=UI)
        assert "needs the operator role" in r.text
        c.cookies.set("jb_token", TOKENS["operator"])
        assert 'class="trigger"' in (await c.get("/ui/schedules")).text
        await c.delete(f"/v1/schedules/{name}", headers=operator)


def _entry(state: str, queue: str, minutes_ago: float, now: int) -> Entry:
    return Entry(id="x", state=state, type="t", queue=queue, created_ns=0,
                 updated_ns=now - int(minutes_ago * 60 * NS), code="", error="")


def test_last_hour_counts_finished_tasks_per_minute_and_queue() -> None:
    now = 10_000 * 60 * NS
    entries = [_entry("complete", "A", 0.1, now), _entry("complete", "A", 0.2, now), _entry("terminated", "A", 5.5, now),
               _entry("retry", "B", 30, now), _entry("complete", "B", 61, now), _entry("active", "B", 1, now)]
    overall, by_queue = charts.last_hour(entries, now)
    assert overall.counts["complete"][-1] == 2 and overall.counts["failed"][-6] == 1
    assert overall.total("retrying") == 1 and overall.total("complete") == 2  # an hour ago is outside
    assert by_queue["A"].failure_share == 0.3333 and by_queue["B"].failure_share is None
    assert by_queue["A"].per_minute == pytest.approx(0.05)
    svg = charts.bars(overall, label="a <b>")
    assert svg.startswith("<svg") and svg.count('class="c-ok"') == 1 and svg.count('class="c-bad"') == 1
    assert "<b>" not in svg


async def test_overview_shows_the_last_hour(web: Served, h: Harness) -> None:
    await make_dead_letters(h, 1)
    async with httpx.AsyncClient(base_url=web.url) as c:
        await eventually(c, "/v1/dead-letters", {"queue": h.queue}, lambda d: d["total"] == 1)
        page = (await c.get("/")).text
    assert 'id="last-hour"' in page and '<svg class="chart"' in page
    row = page.split(f'data-queue="{h.queue}"')[1].split("</tr>")[0]
    assert "100.0%" in row and 'class="c-bad"' in row


async def test_wildcard_task_ids_never_reach_the_store(web: Served, h: Harness) -> None:
    """``>`` as a task id would make a purge by subject remove every task: every path refuses it."""
    task_id = await h.producer.enqueue(f"{h.unique}:keep", queue=h.queue)
    async with httpx.AsyncClient(base_url=web.url) as c:
        for bad in (">", "*", "a.>", "a b"):
            envelope(await c.post("/v1/dead-letters/delete", json={"ids": [bad]}), 400, "invalid_argument")
            envelope(await c.post("/v1/dead-letters/replay", json={"ids": [bad]}), 400, "invalid_argument")
            r = (await c.post("/v1/tasks/retry", json={"ids": [bad]})).json()
            assert r["results"] == [{"id": bad, "status": "failed", "error": "invalid task id"}]
        assert "is not a task id" in (await c.post("/ui/tasks/>/delete", headers=UI)).text
        assert (await c.get("/ui/tasks/>")).status_code == 404
        assert "nothing selected" in (await c.post("/ui/dead-letters/bulk/delete", headers=UI, content="ids=%3E")).text
        assert (await c.get(f"/v1/tasks/{task_id}")).status_code == 200
