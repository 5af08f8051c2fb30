"""`dlq keep`: one index for every command (queries over NATS), the dead_letters gauge, and retention."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from jetbridge._requester import Requester
from jetbridge._store import TaskStore

from bridge import dlq, index_service
from bridge.dlq_keeper import Keeper
from bridge.index import Query
from bridge.metrics import Metrics

pytestmark = pytest.mark.anyio


async def test_keeper_serves_the_index_sets_the_gauge_and_applies_retention(h: Any) -> None:
    rq = Requester(h.nc)
    store = TaskStore(rq)
    ids = []
    for i in range(3):
        task_id = await h.producer.enqueue(f"{h.unique}:x", i)
        task, seq = await store.load(task_id)
        task.state, task.last_err, task.last_err_code = "terminated", f"broken {i}", "bad_input"
        await store.save(task, seq)
        ids.append(task_id)
    live = await h.producer.enqueue(f"{h.unique}:x", "waiting")
    await dlq.set_retention(rq, h.queue, dlq.Retention(max_count=2))
    metrics = Metrics()
    async with anyio.create_task_group() as tg:
        keeper = await tg.start(Keeper(h.nc, metrics, interval=0.2).run)
        await keeper.next_round()
        assert metrics.registry.get_sample_value("jetbridge_dead_letters_stored", {"queue": h.queue}) == 2
        async with anyio.create_task_group() as inner:
            view = await index_service.open_view(h.nc, inner)
            assert isinstance(view, index_service.RemoteView)
            assert await view.count(dlq.query(queue=h.queue)) == 2
            assert await view.count(dlq.query(queue=h.queue, text="BROKEN 2")) == 1
            page = await view.page(dlq.query(queue=h.queue), limit=1)
            assert len(page.entries) == 1 and page.cursor is not None
            rest = await view.page(dlq.query(queue=h.queue), limit=1, cursor=page.cursor)
            assert {page.entries[0].id, rest.entries[0].id} == set(ids[1:]) and rest.cursor is None
            assert await view.ids(Query(queue=h.queue, states=frozenset({"new"}))) == [live]
            await view.forget(ids[2])
            inner.cancel_scope.cancel()
        await keeper.next_round()
        assert keeper.index.get(ids[2]) is None
        assert metrics.registry.get_sample_value("jetbridge_dead_letters_stored", {"queue": h.queue}) == 1
        await store.delete(ids[2])
        await store.delete(ids[1])  # removed without a word to the index (as a TTL would)
        for _ in range(3):  # two stale rounds in a row, whichever round the deletion fell in
            await keeper.next_round()
        assert keeper.rebuilds >= 1 and keeper.index.get(ids[1]) is None
        assert metrics.registry.get_sample_value("jetbridge_dead_letters_stored", {"queue": h.queue}) == 0
        tg.cancel_scope.cancel()
    await rq.close()
