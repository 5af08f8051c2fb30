"""Pausing a queue on the server: two dispatchers stop starting attempts, running ones finish, the pause outlives a
dispatcher restart, producers keep enqueuing, and resume lets everything run."""

from __future__ import annotations

from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge._errors import ConfigError
from jetbridge._requester import Requester
from jetbridge._timeutil import NS, now_ns

from bridge import pause

pytestmark = pytest.mark.anyio

#: how long a paused queue is watched for attempts that should not start (an observation window, not a wait)
QUIET = 1.5


async def test_pause_across_two_dispatchers_and_a_restart(h: Any) -> None:
    started: list[str] = []
    release = anyio.Event()
    running = anyio.Event()
    another = anyio.Event()

    async def job(task: jetbridge.Task) -> Any:
        started.append(task.id)
        if task.payload != "slow":
            another.set()
        if task.payload == "slow":
            running.set()
            await release.wait()
        return "ok"

    rq = Requester(h.nc)
    async with h.service({f"{h.unique}:job": job}):
        async with h.dispatcher(dispatcher_id=f"{h.unique}-a"), h.dispatcher(dispatcher_id=f"{h.unique}-b") as b:
            slow = await h.producer.enqueue(f"{h.unique}:job", "slow")
            await running.wait()
            state = await pause.pause(rq, h.queue, note="deploying the mailer", now_ns=now_ns())
            assert state.paused and state.note == "deploying the mailer" and state.until == pause.FOREVER
            assert "until resumed" in pause.describe(state)
            waiting = [await h.producer.enqueue(f"{h.unique}:job", i) for i in range(5)]  # producers carry on
            release.set()
            assert (await h.producer.wait(slow, timeout=20)).state == "complete"  # the running attempt finishes
            with anyio.move_on_after(QUIET):
                await another.wait()
            assert started == [slow]
            b.stop()
        async with h.dispatcher(dispatcher_id=f"{h.unique}-c"):  # a restarted dispatcher sees the pause too
            assert (await pause.state(rq, h.queue)).paused
            with anyio.move_on_after(QUIET):
                await another.wait()
            assert started == [slow]
            assert not (await pause.resume(rq, h.queue)).paused
            for task_id in waiting:
                assert (await h.producer.wait(task_id, timeout=20)).state == "complete"
    await rq.close()


async def test_pause_until_a_time_ends_by_itself(h: Any) -> None:
    rq = Requester(h.nc)
    state = await pause.pause(rq, h.queue, until_ns=now_ns() + 1 * NS, now_ns=now_ns())
    assert state.paused and not state.until.startswith("2200")
    async def job(task: jetbridge.Task) -> Any:
        return "ok"

    async with h.service({f"{h.unique}:job": job}), h.dispatcher():
        task_id = await h.producer.enqueue(f"{h.unique}:job", None)
        assert (await h.producer.wait(task_id, timeout=20)).state == "complete"
    assert not (await pause.state(rq, h.queue)).paused
    with pytest.raises(ConfigError, match="in the future"):
        await pause.pause(rq, h.queue, until_ns=now_ns() - NS, now_ns=now_ns())
    with pytest.raises(jetbridge.JetbridgeError, match="does not exist"):
        await pause.pause(rq, "NoSuchQueue", now_ns=now_ns())
    await rq.close()
