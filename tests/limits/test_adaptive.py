"""Issue 18 (opt-in): a handler that replies "overloaded" lowers an adaptive rate limit for every dispatcher."""

from __future__ import annotations

import time
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge import TaskSpec
from nats.aio.client import Client

from bridge.embedded import NatsServer
from bridge.limits import limit_id
from tests.harness import Harness
from tests.limits.procs import cli

pytestmark = pytest.mark.anyio


async def test_overloaded_replies_lower_the_rate_then_it_climbs_back(nats_server: NatsServer, nc: Client,
                                                                     unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue()
    task_type = f"adapt{unique}"
    done = cli(nats_server, "limit", "set", task_type, "--rate", "20/s", "--adaptive")
    assert done.returncode == 0 and "adaptive" in done.stdout, done
    assert "adaptive" in cli(nats_server, "limit", "list").stdout
    pushed_back, starts = anyio.Event(), []

    async def work(task: jetbridge.Task) -> Any:
        if not pushed_back.is_set():
            pushed_back.set()
            raise jetbridge.Retry("upstream answered 429", code="rate_limited", after=0.01)
        starts.append(time.monotonic())
        return "ok"

    async with h.service({task_type: work}), h.dispatcher() as d:
        spec_id = limit_id(task_type, "*")
        with anyio.fail_after(10):
            while spec_id not in d.limiter.mirror.specs:  # noqa: ASYNC110 - the mirror announces nothing
                await anyio.sleep(0.01)
        first = await h.producer.enqueue(task_type)
        await h.producer.wait(first, timeout=20)
        adapt = d.limiter.mirror.adapts[spec_id]
        assert adapt.factor == 0.5
        assert d.metrics.registry.get_sample_value("jetbridge_limit_rate_factor", {"limit": spec_id}) == 0.5
        ids = await h.producer.enqueue_many([TaskSpec(type=task_type) for _ in range(80)])
        for task_id in ids:
            assert isinstance(task_id, str)
            assert (await h.producer.wait(task_id, timeout=60)).state == "complete"
    begin = starts[1]
    early = sum(1 for t in starts if begin <= t < begin + 3)
    # lowered to 10/s, climbing back by 2/3 a second: about 33 in 3 s, where 20/s allows 60
    print(f"adaptive: {early} starts in the 3 s after the push-back")
    assert early <= 40, f"{early} starts in the 3 s after the push-back, the limit allows about 33"
    assert cli(nats_server, "limit", "delete", task_type).returncode == 0
