"""Issue 18: a concurrency limit holds exactly across three ``jetbridge run`` processes, also while one is SIGKILLed.

The handler itself records how many attempts of the limited type overlap (it never trusts timings); an unlimited
type on the same queue keeps flowing while the limited one waits.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import anyio
import jetbridge
import msgspec
import pytest
from jetbridge import TaskSpec
from nats.aio.client import Client

from bridge.embedded import NatsServer
from bridge.limit_store import open_bucket
from bridge.limits import Permit
from tests.harness import Harness
from tests.limits.procs import cli, dispatchers

pytestmark = pytest.mark.anyio


class Overlaps:
    """Attempts running now, the most ever at once, and when things happened (for the handler to record)."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started = 0
        self.finished: dict[str, float] = {}
        self.first_start: float | None = None
        self.last_start = 0.0
        #: the most at once since :meth:`mark` (after the SIGKILL: the dead dispatcher's permits came back)
        self.most_since_mark = 0

    def mark(self) -> None:
        self.most_since_mark = self.running

    def enter(self) -> None:
        self.running += 1
        self.started += 1
        self.most = max(self.most, self.running)
        self.most_since_mark = max(self.most_since_mark, self.running)
        self.first_start = self.first_start or time.monotonic()
        self.last_start = time.monotonic()

    def leave(self, task_id: str) -> None:
        self.running -= 1
        self.finished[task_id] = time.monotonic()


async def holds_a_permit(nc: Client, dispatcher_id: str) -> None:
    """Until the KV shows a permit held by ``dispatcher_id`` (so killing it then kills a running attempt)."""
    kv = await open_bucket(nc, create=False)
    assert kv is not None
    watcher = await kv.watch("permit.>")
    try:
        async for entry in watcher:
            if entry is not None and entry.value and msgspec.json.decode(entry.value, type=Permit).dispatcher == dispatcher_id:
                return
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


async def test_three_dispatchers_never_run_more_than_the_limit_even_when_one_is_killed(
        nats_server: NatsServer, nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=2.0, max_run_time=60)
    limited, free = f"lim{unique}:work", f"free{unique}"
    assert cli(nats_server, "limit", "set", f"lim{unique}:*", "--concurrency", "3").returncode == 0
    lim, unl = Overlaps(), Overlaps()
    ten_done, all_done = anyio.Event(), anyio.Event()
    n_limited, n_free = 90, 60

    async def limited_work(task: jetbridge.Task) -> Any:
        lim.enter()
        try:
            await anyio.sleep(0.2)
        finally:
            lim.leave(task.id)
            if len(lim.finished) >= 10:
                ten_done.set()
            if len(lim.finished) >= n_limited:
                all_done.set()
        return "ok"

    async def free_work(task: jetbridge.Task) -> Any:
        unl.enter()
        unl.leave(task.id)
        return "ok"

    async with h.service({limited: limited_work, free: free_work}, concurrency=200):
        with dispatchers(nats_server, h, 3) as procs:
            ids = await h.producer.enqueue_many([TaskSpec(type=limited) for _ in range(n_limited)]
                                                + [TaskSpec(type=free) for _ in range(n_free)])
            with anyio.fail_after(120):
                await ten_done.wait()
                await holds_a_permit(nc, f"d0{unique}")
            procs[0].send_signal(signal.SIGKILL)  # its running attempts are fenced; its permits expire
            lim.mark()
            with anyio.fail_after(180):
                await all_done.wait()
                for task_id in ids:
                    assert isinstance(task_id, str)
                    record = await h.producer.wait(task_id, timeout=60)
                    assert record.state == "complete", record
    assert lim.most <= 3, f"{lim.most} attempts of a type limited to 3 ran at once"
    assert lim.most == 3  # the limit was used to the full, not undershot
    assert lim.most_since_mark == 3, "the killed dispatcher's permits never came back"
    assert len(unl.finished) == n_free
    assert max(unl.finished.values()) < lim.last_start, "the unlimited type waited for the limited one"
    assert cli(nats_server, "limit", "delete", f"lim{unique}:*").returncode == 0
