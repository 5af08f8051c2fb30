"""asyncjobs v0.3.0's ``ajc`` and Jetbridge share schedules: each reads and fires what the other wrote."""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge._store import TaskStore
from jetbridge._timeutil import NS

from tests.asyncjobs.conftest import AJC
from tests.harness import Harness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


async def _ok(task: jetbridge.Task) -> Any:
    return "ok"


async def test_a_schedule_made_with_ajc_cron_add_is_fired_by_jetbridge(ajc: AJC, h: Harness) -> None:
    name = f"aj{h.unique}"
    await ajc.run("tasks", "cron", "add", name, "every 1s", "tick", "--queue", h.queue, "--payload", '{"to":"ada"}')
    stored = await ajc.schedule(name)
    schedules = jetbridge.Schedules(h.nc)
    try:
        async with h.dispatcher(fire_schedules=True), h.service({"tick": _ok}), h.events() as events:
            with anyio.fail_after(30):
                async for event in events:
                    if event.task_id.startswith(f"{name}:") and event.state == "complete":
                        task_id = event.task_id
                        break
        record, _ = await TaskStore(h.admin._rq).load(task_id)
        # byte for byte what ajc stored (asyncjobs' own scheduler would encode these bytes a second time)
        assert record.payload == base64.b64decode(stored["payload"]) == b'"{\\"to\\":\\"ada\\"}"'
        assert record.queue == h.queue and record.max_tries == 10
        view = await schedules.get(name)
        assert view.state.fires >= 1 and view.doc.overlap == "allow"
    finally:
        await schedules.delete(name)
        await schedules.close()


async def test_a_schedule_made_by_jetbridge_is_listed_and_read_by_ajc(ajc: AJC, h: Harness) -> None:
    name = f"jb{h.unique}"
    schedules = jetbridge.Schedules(h.nc)
    try:
        await schedules.add(name, "30 2 * * *", "report:build", {"full": True}, queue=h.queue, tz="Europe/Berlin",
                            deadline=60, max_tries=3, overlap="skip", catchup=3600, jitter=30)
        names = (await ajc.run("tasks", "cron", "list", "--names")).stdout.split()
        assert name in names
        listing = await ajc.run("tasks", "cron", "list")
        assert name in listing.stdout
        seen = await ajc.schedule(name)
        assert seen["schedule"] == "CRON_TZ=Europe/Berlin 30 2 * * *"
        assert (seen["queue"], seen["task_type"], seen["max_tries"]) == (h.queue, "report:build", 3)
        assert base64.b64decode(seen["payload"]) == json.dumps({"full": True}, separators=(",", ":")).encode()
        assert seen["deadline"] == 60 * NS
        text = await ajc.run("tasks", "cron", "view", name)
        assert "report:build" in text.stdout
    finally:
        await schedules.delete(name)
        await schedules.close()


async def test_ajc_reads_a_waiting_delayed_task(ajc: AJC, h: Harness) -> None:
    task_id = await h.producer.enqueue("report:build", {"day": 24}, delay=3600)
    seen = json.loads((await ajc.run("tasks", "view", task_id, "--json")).stdout)
    assert (seen["id"], seen["state"], seen["queue"]) == (task_id, "scheduled", h.queue)
    assert base64.b64decode(seen["payload"]) == b'{"day":24}'
    listed = await ajc.run("tasks", "list", "10000000")  # the shared test server holds many tasks: list them all
    assert task_id in listed.stdout
    await h.producer.cancel(task_id)
