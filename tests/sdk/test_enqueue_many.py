"""``enqueue_many``'s pipeline (a future per publish, the plain path for anything unusual) answers as that many
``enqueue`` calls would: taken ids, dedup keys, a missing queue and a full queue, each alone, in order."""

from __future__ import annotations

import jetbridge
import pytest
from jetbridge import TaskSpec
from nats.aio.client import Client

from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def _waiting(h: Harness) -> int:
    return (await h.admin.info(h.queue)).waiting


async def test_taken_ids_fail_alone_and_the_stored_tasks_are_untouched(h: Harness) -> None:
    taken = f"taken-{h.unique}"
    await h.producer.enqueue("t", "first", task_id=taken)
    twice = f"twice-{h.unique}"
    specs = [TaskSpec(type="t", payload=i) for i in range(6)]
    specs[1] = TaskSpec(type="t", payload="second", task_id=taken)
    specs[3] = TaskSpec(type="t", payload="a", task_id=twice)
    specs[4] = TaskSpec(type="t", payload="b", task_id=twice)
    results = await h.producer.enqueue_many(specs)
    assert isinstance(results[1], jetbridge.DuplicateTaskError) and results[1].task_id == taken
    assert [type(r) for r in results[3:5]].count(jetbridge.DuplicateTaskError) == 1
    assert twice in results[3:5]
    assert sum(isinstance(r, str) for r in results) == 4
    assert (await h.producer.get(taken)).payload == b'"first"'
    assert await _waiting(h) == 1 + 4


async def test_dedup_keys_in_a_batch_name_the_first_task(h: Harness) -> None:
    first = await h.producer.enqueue("t", dedup_key=f"k-{h.unique}")
    results = await h.producer.enqueue_many([TaskSpec(type="t", dedup_key=f"k-{h.unique}"), TaskSpec(type="t"),
                                             TaskSpec(type="t", dedup_key=f"other-{h.unique}")])
    assert isinstance(results[0], jetbridge.DuplicateTaskError) and results[0].task_id == first
    assert all(isinstance(r, str) for r in results[1:])
    assert await _waiting(h) == 3


async def test_a_missing_queue_fails_its_tasks_alone_and_marks_them(h: Harness) -> None:
    specs = [TaskSpec(type="t"), TaskSpec(type="t", queue=f"nope{h.unique}"), TaskSpec(type="t")]
    results = await h.producer.enqueue_many(specs)
    assert isinstance(results[1], jetbridge.QueueNotFoundError)
    assert "jetbridge queue add" in str(results[1])
    assert all(isinstance(r, str) for r in (results[0], results[2]))
    assert await _waiting(h) == 2


async def test_a_full_queue_refuses_the_rest_of_a_batch(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(max_entries=3)
    results = await h.producer.enqueue_many([TaskSpec(type="t", payload=i) for i in range(5)])
    refused = [r for r in results if isinstance(r, jetbridge.QueueFullError)]
    ok = [r for r in results if isinstance(r, str)]
    assert (len(ok), len(refused)) == (3, 2)
    assert await _waiting(h) == 3
    for task_id in ok:
        assert (await h.producer.get(task_id)).state == "new"


async def test_large_tasks_that_overflow_the_outgoing_buffer_are_all_enqueued(h: Harness) -> None:
    """Sixty 100 kB tasks are more than nats-py's 2 MiB outgoing buffer: those that do not fit take the awaited path."""
    big = b"x" * 100_000
    results = await h.producer.enqueue_many([TaskSpec(type="t", payload=big) for _ in range(60)])
    assert all(isinstance(r, str) for r in results), [r for r in results if not isinstance(r, str)][:1]
    assert await _waiting(h) == 60
    assert (await h.producer.get(results[59])).payload == big  # type: ignore[arg-type]
