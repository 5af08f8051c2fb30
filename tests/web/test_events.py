"""The live event stream: Server-Sent Events carrying asyncjobs' task_state events."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from tests.harness import Harness

from .conftest import Served

pytestmark = pytest.mark.anyio


async def test_stream_carries_a_tasks_lifecycle(web: Served, h: Harness) -> None:
    async def work(task: Any) -> str:
        return "done"

    states: list[str] = []
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as c, h.service({f"{h.unique}:w": work}), \
            h.dispatcher():
        async with c.stream("GET", "/v1/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            task = (await c.post("/v1/tasks", json={"type": f"{h.unique}:w", "queue": h.queue})).json()
            with anyio.fail_after(30):
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        if event["task_id"] == task["id"]:
                            states.append(event["state"])
                            if event["state"] == "complete":
                                break
    assert states[0] == "new" and states[-1] == "complete"


async def test_stream_of_one_task_checks_its_id(web: Served) -> None:
    async with httpx.AsyncClient(base_url=web.url) as c:
        r = await c.get("/v1/events", params={"task": "a.b"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_argument"
