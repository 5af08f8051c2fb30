"""The producer on a real server: enqueue, dedup, limits and the clear errors bad input gets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jetbridge
import pytest
from jetbridge._producer import payload_limit
from jetbridge._store import js_api
from nats.aio.client import Client

from bridge.queues import QueueConfig
from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def _waiting(h: Harness) -> int:
    return (await h.admin.info(h.queue)).waiting


async def test_enqueue_stores_an_asyncjobs_task_and_a_work_item(h: Harness) -> None:
    task_id = await h.producer.enqueue("email:new", {"to": "ada"}, max_tries=4)
    record = await h.producer.get(task_id)
    assert (record.type, record.queue, record.state, record.max_tries, record.tries) == ("email:new", h.queue, "new", 4, 0)
    assert record.payload == b'{"to":"ada"}' and len(task_id) == 27
    assert await _waiting(h) == 1


async def test_explicit_id_is_enqueued_once(h: Harness) -> None:
    await h.producer.enqueue("t", 1, task_id=f"order-{h.unique}")
    with pytest.raises(jetbridge.DuplicateTaskError) as info:
        await h.producer.enqueue("t", 2, task_id=f"order-{h.unique}")
    assert info.value.task_id == f"order-{h.unique}"
    assert await _waiting(h) == 1


async def test_dedup_key_within_the_window_names_the_first_task(h: Harness) -> None:
    first = await h.producer.enqueue("t", 1, dedup_key=f"k-{h.unique}")
    with pytest.raises(jetbridge.DuplicateTaskError) as info:
        await h.producer.enqueue("t", 2, dedup_key=f"k-{h.unique}")
    assert info.value.task_id == first
    assert await _waiting(h) == 1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"task_type": "bad type"}, "task type 'bad type' is invalid"),
    ({"task_type": "a.b"}, "task type 'a.b' is invalid"),
    ({"task_type": ""}, "task type '' is invalid"),
    ({"task_type": "t", "queue": "no.dots"}, "queue name 'no.dots' is invalid"),
    ({"task_type": "t", "task_id": "x y"}, "task id 'x y' is invalid"),
    ({"task_type": "t", "max_tries": -1}, "max_tries must be"),
    ({"task_type": "t", "payload": object()}, "payload is neither bytes nor JSON"),
    ({"task_type": "t", "deadline": datetime(2030, 1, 1)}, "deadline must be timezone-aware"),
])
async def test_bad_input_is_refused_with_a_clear_error_and_stores_nothing(
        h: Harness, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(jetbridge.ConfigError, match=match):
        await h.producer.enqueue(**kwargs)
    assert await _waiting(h) == 0


async def test_oversize_payload_is_refused_at_enqueue(h: Harness) -> None:
    limit = payload_limit(h.nc.max_payload)
    with pytest.raises(jetbridge.PayloadTooLargeError, match="over the limit") as info:
        await h.producer.enqueue("t", b"x" * limit)
    assert info.value.limit == limit and info.value.size > limit
    assert await _waiting(h) == 0
    assert await h.producer.enqueue("t", b"x" * (limit * 3 // 4 - 1000))  # just under: accepted


async def test_missing_queue_marks_the_task_queue_error(h: Harness) -> None:
    with pytest.raises(jetbridge.QueueNotFoundError, match="jetbridge queue add nope"):
        await h.producer.enqueue("t", queue="nope")


async def test_full_queue_refuses_new_tasks(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(max_entries=2)
    await h.producer.enqueue("t")
    await h.producer.enqueue("t")
    with pytest.raises(jetbridge.QueueFullError, match="is full"):
        await h.producer.enqueue("t")
    assert await _waiting(h) == 2


async def test_batch_enqueue_returns_ids_and_errors_in_order(h: Harness) -> None:
    specs = [jetbridge.TaskSpec(type="t", payload=i) for i in range(50)]
    specs.insert(10, jetbridge.TaskSpec(type="bad type"))
    results = await h.producer.enqueue_many(specs)
    assert isinstance(results[10], jetbridge.ConfigError)
    assert sum(isinstance(r, str) for r in results) == 50
    assert await _waiting(h) == 50


async def test_get_unknown_task(h: Harness) -> None:
    with pytest.raises(jetbridge.TaskNotFoundError, match="not found"):
        await h.producer.get("nope")


async def test_cancel_a_waiting_task_and_retry_it(h: Harness) -> None:
    task_id = await h.producer.enqueue("t")
    record = await h.producer.cancel(task_id)
    assert (record.state, record.last_err_code) == ("terminated", "cancelled")
    again = await h.producer.retry(task_id)
    assert again.state == "retry"


async def test_queue_definitions_are_validated(h: Harness) -> None:
    for bad, match in [(QueueConfig(name="a.b"), "name 'a.b' is invalid"),
                       (QueueConfig(name="q", max_tries=0), "max_tries"),
                       (QueueConfig(name="q", max_concurrent=0), "max_concurrent"),
                       (QueueConfig(name="q", lease=100, max_run_time=10), "lease"),
                       (QueueConfig(name="q", retry="sometimes"), "retry policy"),
                       (QueueConfig(name="q", replicas=9), "replicas")]:
        with pytest.raises(jetbridge.ConfigError, match=match):
            await h.admin.add(bad)


async def test_queue_update_info_purge_delete(h: Harness) -> None:
    config = await h.admin.update(h.queue, max_concurrent=7, retry="1m", max_tries=5)
    assert (config.max_concurrent, config.retry, config.max_tries) == (7, "1m", 5)
    consumer = await js_api(h.admin._rq, f"CONSUMER.INFO.CHORIA_AJ_Q_{h.queue}.WORKERS")
    assert consumer["config"]["max_deliver"] == -1 and consumer["config"]["max_ack_pending"] == 7
    await h.producer.enqueue("t")
    assert h.queue in await h.admin.names()
    assert await h.admin.purge(h.queue) == 1
    await h.admin.delete(h.queue)
    with pytest.raises(jetbridge.QueueNotFoundError):
        await h.admin.info(h.queue)
