"""Who creates the replicated stores on a cluster.

The fault matrix's cluster scenario creates the task store, the schedule store and the queue as R3 itself
(``QueueAdmin(replicas=3)``), because a dispatcher cannot: ``Dispatcher._setup`` builds ``QueueAdmin(self._rq)``
with the default ``replicas=1`` and auto-creates missing queues as ``QueueConfig(name=...)`` (R1), and no setting
carries a replica count. On a cluster a dispatcher that starts first therefore creates R1 stores, and losing the one
node that holds them loses every task. The second test shows ``store_replicas`` makes a dispatcher create R3 stores.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import nats
import pytest
from jetbridge import _names as names
from jetbridge._requester import Requester
from jetbridge._store import js_api

from bridge.dispatcher import Dispatcher
from bridge.queues import QueueAdmin
from bridge.settings import load_settings
from tests.faults.rig import cluster, wait_for_jetstream

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cluster_nc(tmp_path: Path):  # type: ignore[no-untyped-def]
    servers = cluster(tmp_path / "c")
    for s in servers:
        s.start()
    nc = await nats.connect(servers=[s.url for s in servers])
    try:
        await wait_for_jetstream(nc)
        yield nc
    finally:
        await nc.close()
        for s in servers:
            s.stop()


async def _replicas(nc: nats.NATS, stream: str) -> int:
    info = await js_api(Requester(nc), f"STREAM.INFO.{stream}")
    return int(info["config"]["num_replicas"])


async def test_queue_admin_creates_replicated_stores(cluster_nc: nats.NATS) -> None:
    await QueueAdmin(Requester(cluster_nc), replicas=3).ensure_stores()
    assert await _replicas(cluster_nc, names.TASKS_STREAM) == 3
    assert await _replicas(cluster_nc, names.SCHEDULE_STREAM) == 3


async def test_dispatcher_creates_replicated_stores_when_told(cluster_nc: nats.NATS) -> None:
    settings = load_settings(env={"JETBRIDGE_QUEUES": "R3Q", "JETBRIDGE_STORE_REPLICAS": "3"})
    async with anyio.create_task_group() as tg:
        dispatcher = await tg.start(Dispatcher(cluster_nc, settings).run)
        dispatcher.stop()
    for stream in (names.TASKS_STREAM, names.SCHEDULE_STREAM, names.queue_stream("R3Q")):
        assert await _replicas(cluster_nc, stream) == 3
