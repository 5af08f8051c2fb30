"""Issue 18: a rate limit of 50 starts a second holds within 10% over 30 s, across three ``jetbridge run`` processes.

The handler records when each attempt reaches it; the count over a 30-second window (after the first second, once
every dispatcher is serving) is compared with the limit. Overshoot is impossible by construction (one shared GCRA
bucket, advanced by compare-and-set); undershoot would mean the waiting tasks are not woken in time.
"""

from __future__ import annotations

import bisect
import time
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge import TaskSpec
from nats.aio.client import Client

from bridge.embedded import NatsServer
from tests.harness import Harness
from tests.limits.procs import cli, dispatchers

pytestmark = pytest.mark.anyio

RATE, WINDOW, WARMUP = 50, 30.0, 2.0


async def test_a_rate_of_50_per_second_holds_across_three_dispatchers(nats_server: NatsServer, nc: Client,
                                                                       unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=5.0, max_run_time=60, max_concurrent=1000)
    limited, free = f"rate{unique}:ping", f"free{unique}"
    assert cli(nats_server, "limit", "set", f"rate{unique}:*", "--rate", f"{RATE}/s", "--burst", "5").returncode == 0
    starts: list[float] = []
    free_done: list[float] = []
    enough, first = anyio.Event(), anyio.Event()
    need = int(RATE * (WARMUP + WINDOW)) + 10

    async def limited_work(task: jetbridge.Task) -> Any:
        starts.append(time.monotonic())
        first.set()
        if len(starts) >= need:
            enough.set()
        return None

    async def free_work(task: jetbridge.Task) -> Any:
        free_done.append(time.monotonic())
        return None

    total = need + 150
    async with h.service({limited: limited_work, free: free_work}, concurrency=200):
        ids = await h.producer.enqueue_many([TaskSpec(type=limited) for _ in range(total)])
        assert all(isinstance(i, str) for i in ids)
        with dispatchers(nats_server, h, 3):
            with anyio.fail_after(WARMUP + WINDOW + 120):
                await first.wait()
                await anyio.sleep(WINDOW / 2)
                free_ids = await h.producer.enqueue_many([TaskSpec(type=free) for _ in range(200)])
                for task_id in free_ids:
                    assert isinstance(task_id, str)
                    assert (await h.producer.wait(task_id, timeout=60)).state == "complete"
                await enough.wait()
    begin = starts[0] + WARMUP
    counted = bisect.bisect_left(starts, begin + WINDOW) - bisect.bisect_left(starts, begin)
    expected = RATE * WINDOW
    print(f"rate: {counted} starts in {WINDOW:g}s (limit {RATE}/s: {expected:g})")
    assert abs(counted - expected) <= 0.1 * expected, f"{counted} starts in {WINDOW:g}s, limit {RATE}/s"
    assert len(free_done) == 200 and max(free_done) < starts[-1], "the unlimited type waited for the limited one"
    assert cli(nats_server, "limit", "delete", f"rate{unique}:*").returncode == 0
