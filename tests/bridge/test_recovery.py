"""Crash recovery, drain and bad stored data, against real processes and a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge import _names as names
from nats.aio.client import Client

from bridge.embedded import NatsServer
from tests.harness import Harness

pytestmark = pytest.mark.anyio


def _dispatcher_process(server: NatsServer, h: Harness, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bridge", "--server", server.url, "run", "--queue", h.queue,
           "--log-format", "json", *extra]
    env = {**os.environ, "JETBRIDGE_SUBJECT_PREFIX": h.prefix, "JETBRIDGE_CREATE_QUEUES": "false"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_killed_dispatcher_tasks_resume_within_the_lease(nats_server: NatsServer, nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=1.0, max_run_time=60)
    started: list[int] = []
    first_started = anyio.Event()

    async def work(task: jetbridge.Task) -> Any:
        started.append(task.attempt)
        if task.attempt == 1:
            first_started.set()
            await anyio.sleep(3600)  # the first attempt never finishes: its dispatcher dies
        return task.attempt

    async with h.service({"job": work}, drain_timeout=0.5):  # attempt 1 is orphaned: nobody cancels it
        proc = _dispatcher_process(nats_server, h)
        try:
            task_id = await h.producer.enqueue("job")
            with anyio.fail_after(20):
                await first_started.wait()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = time.monotonic()
            async with h.dispatcher():
                record = await h.producer.wait(task_id, timeout=20)
            recovered_after = time.monotonic() - killed_at
        finally:
            proc.kill()
    assert (record.state, record.tries, record.result and record.result.value()) == ("complete", 2, 2)
    assert started == [1, 2]
    assert recovered_after < 1.0 + 3.0  # within the lease (plus scheduling slack), not 2x max run time


async def test_sigterm_drains_running_attempts(nats_server: NatsServer, nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=2.0)
    running = anyio.Event()
    release = anyio.Event()

    async def work(task: jetbridge.Task) -> Any:
        running.set()
        await release.wait()
        return "finished during drain"

    async with h.service({"job": work}):
        proc = _dispatcher_process(nats_server, h, "--shutdown-grace", "20s")
        task_id = await h.producer.enqueue("job")
        with anyio.fail_after(20):
            await running.wait()
        proc.send_signal(signal.SIGTERM)
        release.set()
        code = await anyio.to_thread.run_sync(proc.wait, 20)
        record = await h.producer.get(task_id)
    assert code == 0
    assert (record.state, record.tries) == ("complete", 1)


async def test_drain_hands_back_attempts_that_outlive_the_grace(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=2.0)
    running = anyio.Event()

    async def slow(task: jetbridge.Task) -> Any:
        running.set()
        await anyio.sleep(3600)

    async with h.service({"slow": slow}):
        async with anyio.create_task_group() as tg:
            from bridge.dispatcher import Dispatcher

            d = await tg.start(Dispatcher(nc, h.settings(shutdown_grace=0.2)).run)
            task_id = await h.producer.enqueue("slow")
            with anyio.fail_after(10):
                await running.wait()
            d.stop()
        record = await h.producer.get(task_id)
    assert (record.state, record.tries, record.last_err_code) == ("retry", 0, "shutdown")


async def test_corrupt_work_items_and_missing_tasks_are_removed(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue()
    js = nc.jetstream()
    await js.publish(names.queue_subject(h.queue, "garbage"), b"not json")
    await js.publish(names.queue_subject(h.queue, "nojob"), b'{"kind":0}')
    await js.publish(names.queue_subject(h.queue, "ghost"), b'{"kind":0,"job":"ghost"}')
    terminated = 0
    all_dropped = anyio.Event()

    async def on_advisory(msg: Any) -> None:  # the server reports every TERM'd item
        nonlocal terminated
        terminated += 1
        if terminated == 3:
            all_dropped.set()

    advisories = await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.CHORIA_AJ_Q_{h.queue}.WORKERS",
                                    cb=on_advisory)
    async with h.dispatcher() as d:
        with anyio.fail_after(10):
            await all_dropped.wait()
        dropped = {r: d.metrics.dropped_items.labels(queue=h.queue, reason=r)._value.get()
                   for r in ("corrupt_item", "task_not_found")}
    await advisories.unsubscribe()
    assert (await h.admin.info(h.queue)).waiting == 0
    assert dropped == {"corrupt_item": 2.0, "task_not_found": 1.0}


async def test_corrupt_stored_task_is_kept_as_a_terminated_record(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue()
    task_id = f"broken-{unique}"
    js = nc.jetstream()
    await js.publish(names.task_subject(task_id), b'{"id": "broken", "this is": not json')
    await js.publish(names.queue_subject(h.queue, task_id), f'{{"kind":0,"job":"{task_id}"}}'.encode())
    async with h.dispatcher():
        record = await h.producer.wait(task_id, timeout=10)
    assert (record.state, record.last_err_code) == ("terminated", "corrupt_task")
    assert record.payload == b'{"id": "broken", "this is": not json'


async def test_reconciler_requeues_tasks_that_lost_their_work_item(nc: Client, unique: str) -> None:
    """A producer that died between saving the task and queueing its item (asyncjobs' enqueue window)."""
    from jetbridge._requester import Requester
    from jetbridge._store import TaskStore
    from jetbridge._task import new_task
    from jetbridge._timeutil import NS, now_ns

    from bridge.reconcile import reconcile

    h = Harness(nc, unique)
    await h.make_queue()
    orphan = new_task(task_id=f"orphan-{unique}", task_type="job", queue=h.queue, payload=b"1",
                      content_type="application/json", max_tries=3, created_ns=now_ns() - 120 * NS, deadline_ns=None)
    rq = Requester(nc)
    await TaskStore(rq).create(orphan)
    queued = await h.producer.enqueue("job", 2)  # a normal task: has its item, must be left alone
    fixed = await reconcile(nc, rq, {h.queue: 60.0})
    assert fixed == [orphan.id]
    assert await reconcile(nc, rq, {h.queue: 60.0}) == []  # idempotent: it has an item now

    async def work(task: jetbridge.Task) -> Any:
        return task.payload

    async with h.dispatcher(), h.service({"job": work}):
        assert (await h.producer.wait(orphan.id, timeout=10)).state == "complete"
        assert (await h.producer.wait(queued, timeout=10)).state == "complete"


async def test_purge_ends_the_waiting_tasks(nc: Client, unique: str) -> None:
    from jetbridge._requester import Requester

    from bridge.tasks import purge_queue

    h = Harness(nc, unique)
    await h.make_queue()
    ids = [await h.producer.enqueue("job", i) for i in range(5)]
    seen: list[tuple[int, int]] = []
    assert await purge_queue(nc, Requester(nc), h.queue, lambda d, t: seen.append((d, t))) == 5
    assert seen[-1] == (5, 5)
    assert (await h.admin.info(h.queue)).waiting == 0
    for task_id in ids:
        record = await h.producer.get(task_id)
        assert (record.state, record.last_err_code) == ("terminated", "purged")
