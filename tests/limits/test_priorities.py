"""Issue 18: one ``jetbridge run --queues A:6,B:3,C:1`` serves three queues from one pool of slots, weighted or
strict; the handler records the queue of every attempt in the order they start."""

from __future__ import annotations

import collections
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge import TaskSpec
from nats.aio.client import Client

from bridge.embedded import NatsServer
from bridge.queues import QueueConfig
from tests.harness import Harness
from tests.limits.procs import cli, dispatchers

pytestmark = pytest.mark.anyio
POOL = 4


async def _run(nats_server: NatsServer, nc: Client, unique: str, counts: dict[str, int], *flags: str) -> list[str]:
    """Enqueue ``counts`` tasks per queue (A, B, C), then run one dispatcher with ``flags``; the queues in start order."""
    h = Harness(nc, unique)
    queues = {q: f"{q}{unique}" for q in counts}
    for name in queues.values():
        await h.admin.add(QueueConfig(name=name, retry="fixed:0.05", lease=5.0, max_run_time=30.0))
    order: list[str] = []
    done = anyio.Event()
    total = sum(counts.values())

    async def work(task: jetbridge.Task) -> Any:
        order.append(task.queue.removesuffix(unique))
        if len(order) >= total:
            done.set()
        return None

    task_type = f"prio{unique}"
    for q, n in counts.items():
        ids = await h.producer.enqueue_many([TaskSpec(type=task_type, queue=queues[q]) for _ in range(n)])
        assert all(isinstance(i, str) for i in ids)
    spec = ",".join(f"{queues[q]}:{w}" for q, w in zip(counts, (6, 3, 1), strict=True))
    async with h.service({task_type: work}, concurrency=50):
        with dispatchers(nats_server, h, 1, extra=("--queues", spec, "--concurrency", str(POOL), *flags)):
            with anyio.fail_after(300):
                await done.wait()
    return order


async def test_weighted_shares_follow_the_weights(nats_server: NatsServer, nc: Client, unique: str) -> None:
    order = await _run(nats_server, nc, unique, {"A": 1800, "B": 900, "C": 300})
    contended = order[:2700]  # every queue still has work all along
    shares = collections.Counter(contended)
    print("weighted shares of the first 2700 starts:", dict(shares))
    for q, weight in (("A", 6), ("B", 3), ("C", 1)):
        expected = len(contended) * weight / 10
        assert abs(shares[q] - expected) <= 0.1 * expected, (q, shares)
    gaps = [i for i, q in enumerate(contended) if q == "C"]
    assert max(b - a for a, b in zip(gaps, gaps[1:], strict=False)) < 60, "the lowest queue was starved a while"
    assert len(order) == 3000


async def test_strict_priority_runs_lower_queues_only_when_higher_are_empty(nats_server: NatsServer, nc: Client,
                                                                          unique: str) -> None:
    order = await _run(nats_server, nc, unique, {"A": 1000, "B": 1000, "C": 1000}, "--strict-priority")
    last = {q: max(i for i, x in enumerate(order) if x == q) for q in "ABC"}
    first = {q: order.index(q) for q in "ABC"}
    print("strict: first", first, "last", last)
    # only attempts already under way when the higher queue ran dry may reach the handler out of order
    assert first["B"] > last["A"] - POOL and first["C"] > last["B"] - POOL, (first, last)
    assert len(order) == 3000
    assert cli(nats_server, "info").returncode == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--queues", "A:0"], "--queues: the weight of A must be between 1 and 1000, got 0"),
    (["--queues", "A:6,A:1"], "--queues: A is named twice"),
    (["--queues", "A:x"], "--queues: 'A:x' is not QUEUE or QUEUE:WEIGHT (e.g. CRITICAL:6,DEFAULT:3,LOW:1)"),
    (["--strict-priority"], "strict_priority needs priorities (--queues CRITICAL:6,DEFAULT:3,LOW:1)"),
])
def test_bad_priorities_are_one_line(nats_server: NatsServer, args: list[str], message: str) -> None:
    done = cli(nats_server, "run", *args)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {message}", done
