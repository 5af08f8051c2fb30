"""Issue 18: limits change live, a waiting task spends nothing and is visibly throttled, and starts once allowed."""

from __future__ import annotations

from typing import Any

import anyio
import jetbridge
import pytest
from nats.aio.client import Client

from bridge.embedded import NatsServer
from bridge.limits import limit_id
from tests.harness import Harness
from tests.limits.procs import cli

pytestmark = pytest.mark.anyio


async def _until(check: Any, timeout: float) -> None:
    with anyio.fail_after(timeout):
        while not check():  # noqa: ASYNC110 - a mirror or a metric: nothing announces it
            await anyio.sleep(0.01)


async def test_a_limit_applies_live_and_waiting_tasks_spend_nothing(nats_server: NatsServer, nc: Client,
                                                                    unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue()
    task_type = f"live{unique}"
    started: list[str] = []
    release = anyio.Event()

    async def work(task: jetbridge.Task) -> Any:
        started.append(task.id)
        await release.wait()
        return "done"

    async with h.service({task_type: work}), h.dispatcher() as d:
        assert cli(nats_server, "limit", "set", task_type, "--concurrency", "1").returncode == 0
        await _until(lambda: limit_id(task_type, "*") in d.limiter.mirror.specs, 1.0)  # applied within a second
        ids = [await h.producer.enqueue(task_type) for _ in range(3)]

        def throttled() -> float:
            return d.metrics.registry.get_sample_value("jetbridge_throttled_tasks",
                                                       {"queue": h.queue, "type": task_type}) or 0.0

        await _until(lambda: len(started) == 1 and throttled() == 2, 20)
        waiting = [i for i in ids if i not in started]
        for task_id in waiting:  # no attempt spent, nothing written
            record = await h.producer.get(task_id)
            assert (record.state, record.tries) == ("new", 0)
        shown = cli(nats_server, "task", "get", waiting[0]).stdout
        assert f"limit {task_type}: concurrency 1 (1 running now)" in " ".join(shown.split()), shown
        assert cli(nats_server, "limit", "delete", task_type).returncode == 0
        await _until(lambda: len(started) == 3, 5)  # the waiting tasks start at once
        assert throttled() == 0
        release.set()
        for task_id in ids:
            record = await h.producer.wait(task_id, timeout=20)
            assert (record.state, record.tries) == ("complete", 1)
