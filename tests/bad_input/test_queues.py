"""Bad queue definitions and queues that are missing or vanish: every error names the queue and what to do, and
no task is left half-moved."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge import _names as names
from jetbridge._requester import Requester
from jetbridge._store import js_api
from jetbridge._task import new_task
from jetbridge._timeutil import NS, now_ns
from nats.aio.client import Client

from bridge.dispatcher import Dispatcher
from bridge.embedded import NatsServer
from bridge.puller import Puller
from bridge.queues import QueueConfig
from tests.bad_input.conftest import assert_unaffected, logged, running
from tests.harness import Harness

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("config", "match"), [
    pytest.param(QueueConfig(name="q", max_run_time=0.01), "max_run_time must be between 0.1s and 7 days",
                 id="max-run-time-too-short"),
    pytest.param(QueueConfig(name="q", max_run_time=8 * 86400.0), "max_run_time must be between", id="max-run-time-too-long"),
    pytest.param(QueueConfig(name="q", storage="disk"), "storage must be 'file' or 'memory'", id="storage-unknown"),  # type: ignore[arg-type]
    pytest.param(QueueConfig(name="q", max_age=0.5), "max_age must be 0 (forever) or at least 1s", id="max-age-too-short"),
    pytest.param(QueueConfig(name="q", max_entries=-1), "max_entries must be >= 0", id="max-entries-negative"),
    pytest.param(QueueConfig(name="q", lease=0.01), "lease must be between 0.1s", id="lease-too-short"),
    pytest.param(QueueConfig(name="q" * 257), "is invalid", id="name-too-long"),
    pytest.param(QueueConfig(name="orders.>"), "name 'orders.>' is invalid", id="name-with-wildcard"),
])
async def test_invalid_queue_definition_is_refused_naming_queue_and_field(h: Harness, config: QueueConfig, match: str) -> None:
    before = await h.admin.names()
    with pytest.raises(jetbridge.ConfigError, match=re.escape(match)) as info:
        await h.admin.add(config)
    assert str(info.value).startswith(f"queue {config.name}: ")
    assert await h.admin.names() == before


async def test_replicated_queue_on_a_single_server_is_refused_by_the_server(h: Harness) -> None:
    with pytest.raises(jetbridge.ConfigError, match=f"queue R3{h.unique}: the server refused the definition: .*replicas"):
        await h.admin.add(QueueConfig(name=f"R3{h.unique}", replicas=3))
    assert f"R3{h.unique}" not in await h.admin.names()
    async with running(h):
        await assert_unaffected(h)


async def test_dispatcher_for_a_missing_queue_with_create_queues_off(h: Harness) -> None:
    missing = f"nope{h.unique}"
    with pytest.raises(jetbridge.ConfigError, match=f"queue {missing} does not exist and create_queues is off: "
                                                   f"create it with `jetbridge queue add {missing}`"):
        await Dispatcher(h.nc, h.settings(queues=(h.queue, missing))).run()
    async with running(h):
        await assert_unaffected(h)


async def test_queue_deleted_under_a_running_dispatcher(nc: Client, unique: str, logs: Any) -> None:
    """The dispatcher serves two queues; one is deleted. Its puller backs off instead of spinning against the
    server, the warning names the stream, and the other queue goes on."""
    h = Harness(nc, unique)
    await h.make_queue()
    doomed = f"doomed{unique}"
    await h.admin.add(QueueConfig(name=doomed))
    async with h.dispatcher(queues=(h.queue, doomed)) as d, h.service({"ok": _ok}):
        await h.admin.delete(doomed)
        puller = d.workers[doomed].puller
        assert puller is not None
        first = puller._pull_id
        await anyio.sleep(1.5)  # a window to count pulls in
        pulls = puller._pull_id - first
        await assert_unaffected(h)
    assert pulls <= 10, f"{pulls} pulls in 1.5 s against a deleted queue"
    warnings = logged(logs, "pull_failed", stream=names.queue_stream(doomed))
    assert warnings and warnings[0]["consumer"] == names.QUEUE_CONSUMER


async def test_puller_backs_off_when_its_consumer_is_missing(nc: Client) -> None:
    puller = Puller(nc, "NO_SUCH_STREAM", "NO_SUCH_CONSUMER", lambda msg: None, lambda: 10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(puller.run)
        await anyio.sleep(1.5)  # a window to count pulls in
        puller.stop()
    assert 1 <= puller._pull_id <= 10 and puller.failures >= 1
    assert puller.last_error is not None and puller.last_error.startswith("pull failed: 503")


async def test_retry_onto_a_missing_queue_leaves_the_task_as_it_was(h: Harness) -> None:
    """``task retry --queue nope``: refused naming the queue, and the task keeps its state and queue (it must not
    be left in state retry on a queue that does not exist, with no work item)."""
    async with running(h):
        task_id = await h.producer.enqueue("ok", 1)
        done = await h.producer.wait(task_id, timeout=10)
        with pytest.raises(jetbridge.QueueNotFoundError, match=f"queue nope{h.unique} does not exist .*jetbridge queue add"):
            await h.producer.retry(task_id, queue=f"nope{h.unique}")
        after = await h.producer.get(task_id)
        await assert_unaffected(h)
    assert done.state == "complete"
    assert (after.state, after.queue) != ("retry", f"nope{h.unique}")
    assert after.state in ("complete", "queue_error") and after.task_state.terminal


async def test_enqueue_before_any_store_exists(tmp_path: Path) -> None:
    import nats

    with NatsServer(tmp_path / "fresh") as server:
        nc = await nats.connect(server.url)
        try:
            with pytest.raises(jetbridge.TransportError, match="the task store CHORIA_AJ_TASKS does not exist: "
                                                               "create a queue first"):
                await jetbridge.Producer(nc, queue="Q").enqueue("t", 1)
            reply = await js_api(Requester(nc), "STREAM.NAMES")
            assert not reply.get("streams")
        finally:
            await nc.close()


async def test_reconciler_survives_a_task_with_an_unreadable_time(nc: Client, unique: str) -> None:
    """One orphan with a garbage ``tried`` time must not stop the reconciler from requeueing the other orphans."""
    import msgspec
    from jetbridge._store import TaskStore

    from bridge.reconcile import reconcile

    h = Harness(nc, unique)
    await h.make_queue()
    rq = Requester(nc)
    old = now_ns() - 600 * NS
    bad = msgspec.to_builtins(new_task(task_id=f"badtime-{unique}", task_type="ok", queue=h.queue, payload=b"1",
                                       content_type="application/json", max_tries=3, created_ns=old, deadline_ns=None))
    bad["tried"] = "last tuesday"
    await nc.jetstream().publish(names.task_subject(bad["id"]), msgspec.json.encode(bad))
    good = new_task(task_id=f"orphan-{unique}", task_type="ok", queue=h.queue, payload=b"2",
                    content_type="application/json", max_tries=3, created_ns=old, deadline_ns=None)
    await TaskStore(rq).create(good)
    fixed = await reconcile(nc, rq, {h.queue: 60.0})
    assert good.id in fixed


async def _ok(task: jetbridge.Task) -> Any:
    return {"echo": task.payload}


