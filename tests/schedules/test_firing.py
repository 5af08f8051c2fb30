"""End to end in one process: schedules fired by dispatchers, once per slot, with the stored payload's bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge._cron import parse_cron
from jetbridge._store import TaskStore
from jetbridge._task import TaskState

from tests.harness import Harness

pytestmark = pytest.mark.anyio

PAYLOAD = b'{"to":  "ada",\n "n": [1, 2.50]}'  # odd spacing: re-encoding would change these bytes


@asynccontextmanager
async def schedules(h: Harness) -> AsyncIterator[jetbridge.Schedules]:
    s = jetbridge.Schedules(h.nc)
    try:
        yield s
    finally:
        for view in await s.list():
            if view.doc.queue == h.queue:
                await s.delete(view.doc.name)
        await s.close()


async def completed_ids(h: Harness, prefix: str, count: int, within: float = 30.0) -> list[str]:
    done: set[str] = set()
    async with h.events() as events:
        with anyio.fail_after(within):
            async for event in events:
                if event.task_id.startswith(prefix) and event.state == "complete":
                    done.add(event.task_id)
                    if len(done) >= count:
                        return sorted(done)
    raise AssertionError("unreachable")


async def test_two_dispatchers_fire_each_slot_once_with_the_stored_bytes(h: Harness) -> None:
    name = f"{h.unique}-every"
    seen: list[bytes] = []

    async def tick(task: jetbridge.Task) -> Any:
        seen.append(task.payload.data if isinstance(task.payload, jetbridge.Bytes) else b"")
        return "ok"

    async with (schedules(h) as s, h.dispatcher(fire_schedules=True), h.dispatcher(fire_schedules=True),
                h.service({"tick": tick})):
        await s.add(name, "@every 1s", "tick", jetbridge.Bytes(PAYLOAD, "application/x-raw"), queue=h.queue,
                    overlap="allow")
        ids = await completed_ids(h, f"{name}:", 4)
        view = await s.get(name)
    store = TaskStore(h.admin._rq)
    spec = parse_cron("@every 1s")
    slots = sorted(int(anyio_ts(i)) for i in ids)
    assert all(b == spec.next_after(a) for a, b in zip(slots, slots[1:], strict=False)), ids
    for task_id in ids:
        record, _ = await store.load(task_id)
        assert record.payload == PAYLOAD and record.content_type == "application/x-raw"
        assert record.task_state is TaskState.COMPLETE
    assert view.state.fires >= 4 and view.state.last_task.startswith(f"{name}:")
    assert view.to_dict()["next_fire"]
    assert seen.count(PAYLOAD) == len(seen)


def anyio_ts(task_id: str) -> float:
    from datetime import datetime

    return datetime.strptime(task_id.rsplit(":", 1)[1], "%Y%m%dT%H%M%S%z").timestamp() * 1e9


async def test_skip_policy_does_not_fire_while_the_previous_task_runs(h: Harness) -> None:
    name = f"{h.unique}-skip"
    release, first = anyio.Event(), anyio.Event()
    started: list[str] = []

    async def slow(task: jetbridge.Task) -> Any:
        started.append(task.id)
        first.set()
        await release.wait()
        return "ok"

    async with schedules(h) as s, h.dispatcher(fire_schedules=True), h.service({"slow": slow}):
        await s.add(name, "@every 1s", "slow", {"x": 1}, queue=h.queue, overlap="skip")
        with anyio.fail_after(20):
            await first.wait()
            while (await s.get(name)).state.skipped < 2:  # noqa: ASYNC110 - the stored state has no event
                await anyio.sleep(0.1)
        release.set()
        view = await s.get(name)
    assert view.state.fires == 1 and view.state.skipped >= 2
    assert len(started) == 1


async def test_pause_resume_trigger_backfill_and_delete(h: Harness) -> None:
    name = f"{h.unique}-ops"
    async with schedules(h) as s, h.dispatcher(fire_schedules=True), h.service({"op": _ok}):
        view = await s.add(name, "0 3 * * *", "op", {"k": "v"}, queue=h.queue, tz="Europe/Berlin")
        assert view.doc.schedule == "CRON_TZ=Europe/Berlin 0 3 * * *"
        paused = await s.pause(name, note="maintenance")
        assert paused.doc.paused and paused.doc.note == "maintenance" and paused.to_dict()["next_fire"] == ""
        resumed = await s.resume(name)
        assert not resumed.doc.paused
        task_id = await s.trigger(name)
        assert task_id.startswith(f"{name}:trigger:")
        record = await h.producer.wait(task_id, timeout=20)
        assert record.task_state is TaskState.COMPLETE and record.payload == b'{"k":"v"}'
        from datetime import UTC, datetime

        start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) * 10**9
        first = await s.backfill(name, start, start + 3 * 86400 * 10**9)
        again = await s.backfill(name, start, start + 3 * 86400 * 10**9)
        assert [created for _, _, created in first] == [True, True, True]
        assert [created for _, _, created in again] == [False, False, False]
        assert first[0][1] == f"{name}:20260101T020000Z"
        await s.delete(name)
        assert all(v.doc.name != name for v in await s.list())


async def _ok(task: jetbridge.Task) -> str:
    return "ok"


async def test_an_update_replaces_the_schedule_at_once_and_metrics_count(h: Harness) -> None:
    name = f"{h.unique}-upd"
    async with schedules(h) as s, h.dispatcher(fire_schedules=True) as dispatcher, h.service({"tick": _ok}):
        await s.add(name, "@daily", "tick", {"v": 1}, queue=h.queue, overlap="allow")
        await s.add(name, "@every 1s", "tick", {"v": 2}, queue=h.queue, overlap="allow")  # replaces it at once
        ids = await completed_ids(h, f"{name}:", 2, within=20)
        view = await s.get(name)
        fires = dispatcher.metrics.registry.get_sample_value("jetbridge_schedule_fires_total", {"schedule": name})
    store = TaskStore(h.admin._rq)
    for task_id in ids:
        record, _ = await store.load(task_id)
        assert record.payload == b'{"v":2}'
    assert view.doc.schedule == "@every 1s" and view.state.next_fire
    assert fires is not None and fires >= 2
