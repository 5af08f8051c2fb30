"""Producer answers to reused ids and keys, bad names, signed moves and leaderless stores (issue 13: 4, 8, 9, 10, 16)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import nats
import pytest
from jetbridge import _names as names
from jetbridge._requester import Requester
from jetbridge._store import JetStreamError

from bridge.queues import QueueAdmin, QueueConfig
from bridge.settings import Settings
from tests.faults.rig import cluster, stream_leader, wait_for_jetstream
from tests.harness import Harness

pytestmark = pytest.mark.anyio
SEED = "11" * 32


async def _ok(task: jetbridge.Task) -> Any:
    return {"ok": True}


async def test_a_reused_id_runs_again(h: Harness) -> None:
    """enqueue X, delete X, enqueue X within the dedup window: the new task runs (its item is not swallowed)."""
    task_id = f"again-{h.unique}"
    async with h.dispatcher(), h.service({"t": _ok}):
        assert (await h.run("t", task_id=task_id)).state == "complete"
        await h.producer.delete(task_id)
        assert (await h.run("t", task_id=task_id, timeout=15)).state == "complete"


async def test_a_dedup_key_of_a_removed_task_gets_a_clear_answer(h: Harness) -> None:
    key = f"k-{h.unique}"
    first = await h.producer.enqueue("t", 1, dedup_key=key)
    await h.producer.delete(first)
    with pytest.raises(jetbridge.DuplicateTaskError, match="by a task that has since been removed"):
        await h.producer.enqueue("t", 2, dedup_key=key)


@pytest.mark.parametrize("field", ["task_type", "task_id", "queue"])
async def test_names_with_a_trailing_newline_are_refused(h: Harness, field: str) -> None:
    assert not names.is_valid_name("abc\n") and names.is_valid_name("abc")
    kwargs: dict[str, Any] = {"task_type": "t", field: "abc\n"}
    with pytest.raises(jetbridge.ConfigError, match="is invalid"):
        await h.producer.enqueue(**kwargs)
    with pytest.raises(jetbridge.ConfigError):
        Settings(queues=("abc\n",)).validate()
    with pytest.raises(jetbridge.ConfigError):
        Settings(subject_prefix="jb.x\n").validate()


async def test_retry_of_a_signed_task_on_another_queue_is_refused(h: Harness) -> None:
    signed = jetbridge.Producer(h.nc, queue=h.queue, signer=jetbridge.Signer(SEED))
    task_id = await signed.enqueue("t", 1)
    with pytest.raises(jetbridge.ConfigError, match="signature covers the queue"):
        await signed.retry(task_id, queue="ELSEWHERE")
    assert (await signed.get(task_id)).queue == h.queue  # untouched
    await signed.retry(task_id, queue=h.queue)  # its own queue stays allowed


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_tries": 2**63}, "max_tries must be"),
    ({"max_tries": True}, "max_tries must be"),
    ({"deadline": timedelta(days=3_000_000)}, "too far in the future"),
])
async def test_limits_beyond_what_the_store_can_hold_are_refused(h: Harness, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(jetbridge.ConfigError, match=match):
        await h.producer.enqueue("t", **kwargs)


async def test_a_store_without_a_leader_is_unavailable_then_retried(tmp_path: Path) -> None:
    """While an R3 store has no quorum, enqueue retries (bounded) and then says unavailable, not 'does not exist'."""
    servers = cluster(tmp_path / "c", name="jbunavail")
    for s in servers:
        s.start()
    nc = await nats.connect(servers=[servers[0].url], max_reconnect_attempts=-1)
    try:
        await wait_for_jetstream(nc)
        rq = Requester(nc)
        await QueueAdmin(rq, replicas=3).add(QueueConfig(name="UQ", replicas=3))
        producer = jetbridge.Producer(nc, queue="UQ", unavailable_timeout=1.0)
        await producer.enqueue("t", 1)
        leader = await stream_leader(rq, names.TASKS_STREAM)
        stopped = [s for s in servers[1:]]
        for s in stopped:  # node 1 stays: it is the client's, and alone it has no quorum
            s.stop()
        assert leader  # there was one
        with anyio.fail_after(30):
            with pytest.raises(jetbridge.TransportError, match="unavailable") as info:
                await producer.enqueue("t", 2)
        assert "does not exist" not in str(info.value)
        patient = jetbridge.Producer(nc, queue="UQ", unavailable_timeout=60.0)
        async with anyio.create_task_group() as tg:
            result: list[str] = []

            async def enqueue() -> None:
                result.append(await patient.enqueue("t", 3))

            tg.start_soon(enqueue)
            for s in stopped:
                s.start()
        assert len(result) == 1
        await wait_for_jetstream(nc)  # reads need the meta leader back too
        with anyio.fail_after(30):
            while True:
                try:
                    assert (await patient.get(result[0])).state == "new"
                    break
                except (jetbridge.JetbridgeError, JetStreamError):
                    await anyio.sleep(0.2)  # bounded: the cluster is still settling after the restart
        await rq.close()
    finally:
        await nc.close()
        for s in servers:
            s.stop()


def test_the_wire_codec_refuses_names_with_a_trailing_newline() -> None:
    import msgspec
    from jetbridge._protocol import Name

    assert msgspec.json.decode(b'"abc"', type=Name) == "abc"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'"abc\\n"', type=Name)
