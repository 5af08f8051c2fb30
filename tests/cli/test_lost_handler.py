"""A handler that goes silent: the retry says why (``last_err``), it is not left null (issue 15, item 8)."""

from __future__ import annotations

import anyio
import pytest

from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def test_a_lost_handlers_retry_has_a_last_error(h: Harness) -> None:
    await h.make_queue(lease=1.0, retry="fixed:30")
    silent = await h.nc.subscribe(f"{h.prefix}.t", queue="jetbridge")  # takes the request, never answers
    try:
        async with h.events() as events, h.dispatcher():
            task_id = await h.producer.enqueue("t", 1)
            with anyio.fail_after(30):
                async for event in events:
                    if event.task_id == task_id and event.state == "retry":
                        break
            record = await h.producer.get(task_id)
        assert record.state == "retry" and record.last_err and "lost" in record.last_err, record
        assert record.last_err_code == "handler_lost"
    finally:
        await silent.unsubscribe()
