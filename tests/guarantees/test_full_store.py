"""A full JetStream store (a full disk, or the account's storage limit): nothing accepted is lost, nothing runs twice.

While the store refuses writes the dispatcher cannot save a task ``active``, so it must not run it; a producer's
enqueue is refused with a clear error (nothing was accepted). Once space is freed every task accepted before runs
exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import jetbridge
import nats
import pytest
from jetbridge._requester import Requester
from jetbridge._store import js_api
from nats.aio.client import Client

from bridge.embedded import NatsServer
from tests.bad_input.conftest import eventually, metric
from tests.harness import Harness

pytestmark = pytest.mark.anyio

STORE_LIMIT = "2MB"


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server whose JetStream file store holds 2 MB: full as soon as a filler stream takes it."""
    conf = tmp_path / "small.conf"
    conf.write_text(f"jetstream {{\n  max_file_store: {STORE_LIMIT}\n  max_memory_store: 64MB\n}}\n")
    server = NatsServer(tmp_path / "nats", extra_args=["-c", str(conf)])
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def small_nc(small_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(small_server.url)
    yield client
    await client.close()


async def fill_store(nc: Client) -> int:
    """Fill the store with a filler stream until it refuses a write; returns the messages written."""
    js = nc.jetstream()
    await js.add_stream(name="FILLER", subjects=["filler"])
    written = 0
    chunk = b"x" * 4096
    while True:
        try:
            await js.publish("filler", chunk)
        except nats.js.errors.APIError as exc:
            assert "insufficient resources" in str(exc)
            return written
        written += 1


async def test_a_full_store_loses_nothing_and_runs_nothing_twice(small_nc: Client) -> None:
    h = Harness(small_nc, "full")
    await h.make_queue(retry="fixed:0.05")
    accepted = [await h.producer.enqueue("work", payload={"n": n}) for n in range(10)]
    await fill_store(small_nc)

    with pytest.raises(jetbridge.JetbridgeError) as refused:  # nothing accepted: a clear error, not a hang
        await h.producer.enqueue("work", payload={"n": "late"})
    assert "insufficient resources" in str(refused.value) or "storage" in str(refused.value).lower()

    calls: Counter[str] = Counter()

    async def work(task: jetbridge.Task) -> dict[str, int]:
        calls[task.id] += 1
        return {"attempt": task.attempt}

    async with h.dispatcher() as d, h.service({"work": work}):
        # The store is full: no task can be saved active, so none may run. Each item is refused twice, not run.
        refusals = len(accepted) * 2
        await eventually(lambda: metric(d.metrics.save_failures, queue=h.queue) >= refusals, within=30)
        assert not calls, "a task ran although its active state could not be saved"
        await js_api(Requester(small_nc), "STREAM.DELETE.FILLER")
        records = [await h.producer.wait(task_id, timeout=60) for task_id in accepted]
    assert [r.state for r in records] == ["complete"] * len(accepted)
    assert all(calls[task_id] == 1 for task_id in accepted), calls
    assert all(r.tries == 1 for r in records), [r.tries for r in records]
