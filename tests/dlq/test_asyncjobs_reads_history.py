"""A task carrying a full attempt history and a replay count is still a task asyncjobs reads and retries."""

from __future__ import annotations

from typing import Any

import jetbridge
import pytest
from jetbridge._requester import Requester
from jetbridge._store import TaskStore
from nats.aio.client import Client

from bridge import dlq
from tests.asyncjobs.conftest import AJ, aj, ajcompat_binary  # noqa: F401 - fixtures
from tests.harness import Harness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


async def test_asyncjobs_reads_and_retries_a_replayed_task_with_history(nc: Client, unique: str, aj: AJ) -> None:  # noqa: F811
    h = Harness(nc, unique)
    await h.make_queue(max_tries=25)
    runs = 0

    async def flaky(task: jetbridge.Task) -> Any:
        nonlocal runs
        runs += 1
        if task.payload == "fixed":
            return "done"
        raise jetbridge.Retry("try again " + "x" * 2000) if task.attempt < 22 else jetbridge.Terminate("give up")

    task_id = await aj.enqueue(h.queue, f"{unique}:flaky", "broken", "--tries", "25")
    async with h.dispatcher(), h.service({f"{unique}:flaky": flaky}):
        dead = await h.producer.wait(task_id, timeout=60)
        assert dead.state == "terminated" and dead.history is not None
        assert len(dead.history.attempts) == 20 and dead.history.dropped == 2
        doc = await aj.get(task_id)  # asyncjobs' own LoadTaskByID of the record with its history
        assert (doc["id"], doc["state"], doc["tries"]) == (task_id, "terminated", 22)
        rq = Requester(nc)
        assert (await dlq.replay(nc, rq, task_id, payload=b'"fixed"')).done
        done = await h.producer.wait(task_id, timeout=30)
        while done.state != "complete":
            done = await h.producer.wait(task_id, timeout=30)
        assert done.replays == 1 and done.history is not None and done.history.attempts[-1].replay == 1
        doc = await aj.get(task_id)
        assert (doc["state"], doc["result"]["payload"]) == ("complete", "done")
        retried = await aj.json("retry", "--queue", h.queue, task_id)  # asyncjobs saves it: our members go
        assert retried["id"] == task_id
        await h.producer.wait(task_id, timeout=30)
        raw, _ = await TaskStore(rq).load(task_id)
        assert raw.state == "complete"
        await rq.close()
