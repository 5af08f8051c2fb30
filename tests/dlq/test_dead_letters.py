"""Dead letters on a real server: history from the dispatcher, replay (idempotent, changed payload), retention."""

from __future__ import annotations

from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge._requester import Requester
from jetbridge._store import TaskStore

from bridge import dlq
from bridge.index import TaskIndex

pytestmark = pytest.mark.anyio


async def _dead_letter(h: Any, payload: Any = None) -> str:
    """A task that its handler terminated (``bad`` payloads) and that succeeds once the payload is fixed."""
    return str(await h.producer.enqueue(f"{h.unique}:job", payload, max_tries=2))


def _handlers(h: Any, runs: list[str]) -> dict[str, Any]:
    async def job(task: jetbridge.Task) -> Any:
        runs.append(task.id)
        if task.payload == "bad":
            raise jetbridge.Terminate("the payload is bad", code="bad_input")
        return "ok"

    return {f"{h.unique}:job": job}


async def test_dead_letter_keeps_history_and_replays_once_under_two_concurrent_replays(h: Any) -> None:
    runs: list[str] = []
    received: list[bytes] = []

    async def on_event(msg: Any) -> None:
        received.append(msg.data)

    sub = await h.nc.subscribe(f"{dlq.EVENT_PREFIX}.{h.queue}.*", cb=on_event)
    async with h.service(_handlers(h, runs)), h.dispatcher() as dispatcher:
        task_id = await _dead_letter(h, "bad")
        dead = await h.producer.wait(task_id, timeout=20)
        assert dead.state == "terminated" and dead.history is not None
        assert [a.outcome for a in dead.history.attempts] == ["terminate"]
        assert dead.history.attempts[0].dispatcher == dispatcher.id
        samples = dispatcher.metrics.registry.get_sample_value(
            "jetbridge_dead_letters_total", {"queue": h.queue, "type": f"{h.unique}:job", "state": "terminated",
                                             "code": "bad_input"})
        assert samples == 1
        rq = Requester(h.nc)
        results = await anyio_gather(lambda: dlq.replay(h.nc, rq, task_id, payload=b'"bad"'),
                                     lambda: dlq.replay(h.nc, rq, task_id, payload=b'"bad"'))
        assert sorted(r.done for r in results) == [False, True]
        again = await h.producer.wait(task_id, timeout=20)
        while again.replays != 1 or again.state != "terminated":  # the replay's run ends terminated again
            again = await h.producer.wait(task_id, timeout=20)
        assert runs.count(task_id) == 2
        assert [a.replay for a in again.history.attempts] == [0, 1]
        await rq.close()
    await sub.unsubscribe()
    assert len(received) >= 1


async def anyio_gather(*fns: Any) -> list[Any]:
    out: list[Any] = [None] * len(fns)

    async def one(i: int) -> None:
        out[i] = await fns[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(fns)):
            tg.start_soon(one, i)
    return out


async def test_replay_with_a_fixed_payload_completes_in_place(h: Any) -> None:
    runs: list[str] = []
    async with h.service(_handlers(h, runs)), h.dispatcher():
        task_id = await _dead_letter(h, "bad")
        assert (await h.producer.wait(task_id, timeout=20)).state == "terminated"
        rq = Requester(h.nc)
        assert (await dlq.replay(h.nc, rq, task_id, payload=b'"good"', dry_run=True)).done
        assert (await h.producer.get(task_id)).state == "terminated"  # a dry run changes nothing
        assert (await dlq.replay(h.nc, rq, task_id, payload=b'"good"')).done
        done = await h.producer.wait(task_id, timeout=20)
        while done.state != "complete":
            done = await h.producer.wait(task_id, timeout=20)
        assert done.replays == 1 and done.result is not None and done.result.value() == "ok"
        assert done.history is not None and [a.outcome for a in done.history.attempts] == ["terminate", "complete"]
        assert not (await dlq.replay(h.nc, rq, task_id)).done  # complete: not a dead letter
        await rq.close()


async def test_retention_by_count_and_by_age(h: Any) -> None:
    rq = Requester(h.nc)
    store = TaskStore(rq)
    index = TaskIndex()
    ids = []
    for i in range(6):
        task_id = await h.producer.enqueue(f"{h.unique}:x", i)
        task, seq = await store.load(task_id)
        task.state, task.last_err_code = "expired", "max_tries"
        await store.save(task, seq)
        ids.append(task_id)
    async with anyio.create_task_group() as tg:
        tg.start_soon(index.follow, h.nc)
        await index.caught_up.wait()
        assert index.count(dlq.query(queue=h.queue)) == 6
        now = max(e.updated_ns for e in index.page(dlq.query(queue=h.queue), limit=100).entries)
        newest_first = sorted(ids, key=lambda i: index.get(i).updated_ns, reverse=True)  # type: ignore[union-attr]
        assert dlq.over_retention(index, h.queue, dlq.Retention(max_count=4), now) == newest_first[4:]
        oldest = index.get(newest_first[-1])
        assert oldest is not None
        age_s = (now - oldest.updated_ns) / 1e9
        assert dlq.over_retention(index, h.queue, dlq.Retention(max_age=age_s / 2), now + 1) != []
        assert dlq.over_retention(index, h.queue, dlq.Retention(max_age=3600), now) == []
        await dlq.set_retention(rq, h.queue, dlq.Retention(max_count=2))
        assert await dlq.get_retention(rq, h.queue) == dlq.Retention(max_count=2)
        assert await dlq.enforce_retention(rq, index, [h.queue]) == {h.queue: 4}
        assert sorted(e.id for e in index.page(dlq.query(queue=h.queue)).entries) == sorted(newest_first[:2])
        for gone in newest_first[2:]:
            with pytest.raises(jetbridge.TaskNotFoundError):
                await h.producer.get(gone)
        tg.cancel_scope.cancel()
    await rq.close()


async def test_replay_on_another_queue(h: Any) -> None:
    from bridge.queues import QueueConfig

    other = f"{h.queue}b"
    await h.admin.add(QueueConfig(name=other, retry="fixed:0.05", lease=2.0, max_run_time=10.0))
    runs: list[str] = []
    async with h.service(_handlers(h, runs)), h.dispatcher(queues=(h.queue, other)):
        task_id = await _dead_letter(h, "bad")
        assert (await h.producer.wait(task_id, timeout=20)).state == "terminated"
        rq = Requester(h.nc)
        assert (await dlq.replay(h.nc, rq, task_id, queue=other, payload=b'"good"')).done
        done = await h.producer.wait(task_id, timeout=20)
        while done.state != "complete":
            done = await h.producer.wait(task_id, timeout=20)
        assert done.queue == other and done.replays == 1
        missing = await dlq.replay(h.nc, rq, "no-such-task")
        assert not missing.done and missing.why == "not found"
        await rq.close()


async def test_a_rate_spaces_operations_out() -> None:
    pacer = dlq.Pacer(50.0)
    started = anyio.current_time()
    for _ in range(11):
        await pacer.wait()
    assert anyio.current_time() - started >= 10 / 50 - 0.01  # a lower bound holds however loaded the machine is
