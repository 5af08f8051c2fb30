"""A replica that is behind must not make the dispatcher drop a live task.

With ``allow_direct`` (Jetbridge's task store turns it on) a direct get may be answered by any replica of a
replicated store, including one that is still catching up after a restart. The fault matrix's cluster scenario lost
tasks that way: a direct get answered "no such task" for a task created while that node was down, and the dispatcher
removed the work item (TERM); or it answered with a final state the task had left since (``queue_error`` before a
``task retry``), and the dispatcher acknowledged the item. Either way the task stayed unfinished with no work item.

These tests make the lag deterministic: the dispatcher's direct reads of one task come from a "replica that is
behind", its leader reads (``direct=False``) from the real store. The dispatcher must confirm with the leader before
it drops an item, and then run the task. A single test server has an R1 store, where the dispatcher has no reason
to doubt a direct get (and needs no permission for leader reads), so the tests turn ``confirm_reads`` on as a
replicated store would. Each test has its own server: the shared one's task store may have been created by
asyncjobs, without direct gets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import jetbridge
import nats
import pytest
from jetbridge._errors import TaskNotFoundError
from jetbridge._task import decode_task, encode_task
from nats.aio.client import Client

from bridge.embedded import NatsServer
from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def work(task: jetbridge.Task) -> Any:
    return {"ran": task.id}


def behind(dispatcher: Any, task_id: str, answer: Any) -> list[bool]:
    """Route the dispatcher's direct reads of ``task_id`` to ``answer(raw, seq)``; returns the reads seen."""
    store = dispatcher.store
    real = store.load_raw
    reads: list[bool] = []

    async def load_raw(tid: str, *, direct: bool | None = None) -> tuple[bytes, int]:
        use_direct = store.direct if direct is None else direct
        if tid != task_id:
            return await real(tid, direct=direct)
        reads.append(use_direct)
        raw, seq = await real(tid, direct=False)
        return answer(raw, seq) if use_direct else (raw, seq)

    store.load_raw = load_raw
    return reads


@pytest.fixture
async def nc(own_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(own_server.url)
    yield client
    await client.close()


async def test_task_a_lagging_replica_has_not_seen_is_run_not_dropped(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue()
    task_id = f"new-{unique}"

    def not_yet(raw: bytes, seq: int) -> tuple[bytes, int]:
        raise TaskNotFoundError(f"task {task_id} not found")

    async with h.dispatcher() as d, h.service({"job": work}):
        assert d.store.direct and not d.confirm_reads  # an R1 store: direct gets are never stale
        d.confirm_reads = True  # as on a replicated store
        reads = behind(d, task_id, not_yet)
        await h.producer.enqueue("job", task_id=task_id)
        record = await h.producer.wait(task_id, timeout=10)
    assert (record.state, record.result and record.result.value()) == ("complete", {"ran": task_id})
    assert reads[:2] == [True, False]  # the direct read said "missing"; the leader was asked before dropping


async def test_final_state_from_a_lagging_replica_is_checked_with_the_leader(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue()
    task_id = f"retried-{unique}"

    def stale_final(raw: bytes, seq: int) -> tuple[bytes, int]:
        old = decode_task(raw)
        old.state, old.last_err = "queue_error", "could not put the task on its queue"
        return encode_task(old), max(1, seq - 1)

    async with h.dispatcher() as d, h.service({"job": work}):
        d.confirm_reads = True
        reads = behind(d, task_id, stale_final)
        await h.producer.enqueue("job", task_id=task_id)
        record = await h.producer.wait(task_id, timeout=10)
    assert (record.state, record.result and record.result.value()) == ("complete", {"ran": task_id})
    assert reads[:2] == [True, False]
