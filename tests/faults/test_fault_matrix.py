"""The fault matrix: a steady load on real processes while dispatchers, handlers and nats-servers are killed,
drained and restarted; every task's fate is checked at the end (see tests/faults/rig.py for the judgement).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest
from jetbridge import _names as names
from jetbridge._requester import Requester

from bridge.embedded import NatsServer
from tests.faults.conftest import Scale
from tests.faults.rig import Fates, Faults, Rig, Row, cluster, scenario, stream_leader, wait_stream_current

pytestmark = pytest.mark.anyio


def _debug_env() -> dict[str, str]:
    import os

    return {"JETBRIDGE_LOG_LEVEL": "debug"} if os.environ.get("FAULTS_DEBUG") else {}


def check(row: Row, fates: Fates, faults: int) -> None:
    if row.enqueue_errors:
        print(f"\n{row.scenario}: enqueue errors (retried): {row.enqueue_errors}")
    assert fates.ok, f"{row.scenario}: {fates.explain()}"
    assert row.faults == faults, f"{row.scenario}: injected {row.faults} of {faults} faults"
    assert row.passed


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = NatsServer(tmp_path / "nats").start()
    yield s
    s.stop()


async def test_dispatcher_sigkill_mid_attempt(tmp_path: Path, server: NatsServer, scale: Scale) -> None:
    """SIGKILL the dispatcher while attempts run (the moment a handler starts one), restart it at once."""

    async def kill_dispatcher(rig: Rig, marks: Faults, j: int) -> None:
        assert rig.observer is not None
        assert await rig.observer.next_start(30), "no attempt started: nothing to interrupt"
        d = rig.dispatchers[0]
        d.send(signal.SIGKILL)
        marks.mark(f"dispatcher SIGKILL {j}")
        assert await d.wait_exit(10) == -signal.SIGKILL
        await rig.restart(d)

    async with Rig(tmp_path, [server], dispatcher_env=_debug_env()) as rig:
        await rig.start()
        row, fates = await scenario("dispatcher SIGKILL", rig, tasks=scale.tasks, rate=scale.rate,
                                    faults=scale.faults * 2, inject=kill_dispatcher,
                                    settle_timeout=scale.settle_timeout)
    check(row, fates, scale.faults * 2)


async def test_handler_replicas_sigkill(tmp_path: Path, server: NatsServer, scale: Scale) -> None:
    """SIGKILL one handler replica at a time (the other keeps serving), and finally both at once; restart them."""

    async def kill_handlers(rig: Rig, marks: Faults, j: int) -> None:
        assert rig.observer is not None
        assert await rig.observer.next_start(30), "no attempt started: nothing to interrupt"
        victims = rig.handlers if j == total else [rig.handlers[j % len(rig.handlers)]]
        for h in victims:
            h.send(signal.SIGKILL)
        marks.mark(f"handler SIGKILL {[h.name for h in victims]}")
        for h in victims:
            assert await h.wait_exit(10) == -signal.SIGKILL
        if j == total:
            await anyio.sleep(rig.lease)  # both replicas gone for a lease: attempts are lost, new ones find no handler
        for h in victims:
            await rig.restart(h)

    total = scale.faults * 2
    async with Rig(tmp_path, [server]) as rig:
        await rig.start()
        row, fates = await scenario("handler SIGKILL", rig, tasks=scale.tasks, rate=scale.rate, faults=total,
                                    inject=kill_handlers, settle_timeout=scale.settle_timeout)
    check(row, fates, total)


async def test_sigterm_everything_then_restart(tmp_path: Path, server: NatsServer, scale: Scale) -> None:
    """SIGTERM the dispatcher and both handlers together: each drains and exits 0; then start them all again."""
    exits: list[tuple[str, int | None]] = []

    async def drain_all(rig: Rig, marks: Faults, j: int) -> None:
        assert rig.observer is not None
        assert await rig.observer.next_start(30)
        procs = rig.dispatchers + rig.handlers
        for p in procs:
            p.send(signal.SIGTERM)
        marks.mark(f"SIGTERM all {j}")
        for p in procs:
            exits.append((p.name, await p.wait_exit(40)))
        for p in rig.handlers + rig.dispatchers:
            p.start()
        for p in procs:
            await p.wait_ready()

    async with Rig(tmp_path, [server]) as rig:
        await rig.start()
        row, fates = await scenario("SIGTERM all, restart", rig, tasks=scale.tasks, rate=scale.rate,
                                    faults=scale.faults, inject=drain_all, settle_timeout=scale.settle_timeout)
    assert all(code == 0 for _, code in exits), f"a drained process did not exit 0: {exits}"
    check(row, fates, scale.faults)


async def test_nats_server_restart(tmp_path: Path, server: NatsServer, scale: Scale) -> None:
    """Restart the single nats-server (file storage) under load: cleanly (SIGTERM) and after a crash (SIGKILL)."""

    async def restart_server(rig: Rig, marks: Faults, j: int) -> None:
        assert rig.observer is not None
        assert await rig.observer.next_start(30)
        crash = j % 2 == 0
        marks.mark("nats-server SIGKILL" if crash else "nats-server SIGTERM")
        server.kill() if crash else server.stop()
        await anyio.sleep(1.0)  # a second of outage
        await anyio.to_thread.run_sync(server.start)

    async with Rig(tmp_path, [server], dispatcher_env=_debug_env()) as rig:
        await rig.start()
        row, fates = await scenario("nats-server restart", rig, tasks=scale.tasks, rate=scale.rate,
                                    faults=scale.faults, inject=restart_server, settle_timeout=scale.settle_timeout)
    check(row, fates, scale.faults)


async def test_three_node_cluster_loses_a_node(tmp_path: Path, scale: Scale) -> None:
    """Three routed nats-servers, R3 task store, schedule store and queue; kill the node leading the task store
    (then, next time, the one leading the queue), and bring it back, under load."""
    servers = cluster(tmp_path / "cluster")
    for s in servers:
        s.start()
    leaders: list[str] = []

    async def kill_leader(rig: Rig, marks: Faults, j: int) -> None:
        assert rig.observer is not None and rig.nc is not None
        rq = Requester(rig.nc)
        stream = names.TASKS_STREAM if j % 2 else names.queue_stream(rig.queues[0])
        leader = await stream_leader(rq, stream)
        victim = next(s for s in servers if s.name == leader)
        leaders.append(f"{stream}@{leader}")
        assert await rig.observer.next_start(30), f"nothing runs after fault {j - 1}:\n{await rig.diagnose()}"
        victim.kill()
        marks.mark(f"kill {leader}")
        await anyio.sleep(2.0)  # two seconds with two nodes
        await anyio.to_thread.run_sync(victim.start)
        for st in (names.TASKS_STREAM, names.SCHEDULE_STREAM, names.queue_stream(rig.queues[0])):
            await wait_stream_current(rq, st, 3)
        await rq.close()

    try:
        async with Rig(tmp_path, servers, replicas=3) as rig:
            assert rig.nc is not None
            await rig.start()
            rq = Requester(rig.nc)
            for st in (names.TASKS_STREAM, names.SCHEDULE_STREAM, names.queue_stream(rig.queues[0])):
                await wait_stream_current(rq, st, 3)
            row, fates = await scenario("3-node cluster, node killed", rig, tasks=scale.tasks, rate=scale.rate,
                                        faults=scale.faults, inject=kill_leader, settle_timeout=scale.settle_timeout,
                                        notes=lambda: "killed " + ", ".join(leaders))
    finally:
        for s in servers:
            s.stop()
    check(row, fates, scale.faults)


@pytest.mark.parametrize("count", [2, 3])
async def test_several_dispatchers_share_the_queues(tmp_path: Path, server: NatsServer, scale: Scale, count: int) -> None:
    """``count`` dispatchers on the same two queues; one of them (in turn) is SIGKILLed and restarted."""

    async def kill_one(rig: Rig, marks: Faults, j: int) -> None:
        assert rig.observer is not None
        assert await rig.observer.next_start(30)
        d = rig.dispatchers[j % count]
        d.send(signal.SIGKILL)
        marks.mark(f"SIGKILL {d.name}")
        await d.wait_exit(10)
        await rig.restart(d)

    async with Rig(tmp_path, [server], queues=("FQA", "FQB")) as rig:
        await rig.start(dispatchers=count)
        row, fates = await scenario(f"{count} dispatchers, 2 queues", rig, tasks=scale.tasks, rate=scale.rate,
                                    faults=scale.faults, inject=kill_one, settle_timeout=scale.settle_timeout)
    check(row, fates, scale.faults)


async def test_soak(tmp_path: Path, server: NatsServer, scale: Scale) -> None:
    """100,000 tasks through one dispatcher and two handler replicas; the dispatcher's RSS sampled every second."""
    if not scale.full:
        pytest.skip("the soak runs at full scale only (make faults)")
    samples: list[tuple[float, int]] = []

    async with Rig(tmp_path, [server]) as rig:
        await rig.start()
        dispatcher = rig.dispatchers[0]
        began = time.monotonic()

        async def sample() -> None:
            while True:
                rss = dispatcher.rss_kib()
                if rss is not None:
                    samples.append((time.monotonic() - began, rss))
                await anyio.sleep(1.0)  # the sampling period

        def rss_note() -> str:
            return rss_summary(samples)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            row, fates = await scenario("soak", rig, tasks=scale.soak_tasks, rate=1500.0, faults=0,
                                        inject=_no_fault, kinds="echo", settle_timeout=scale.settle_timeout,
                                        notes=lambda: f"{scale.soak_tasks / (time.monotonic() - began):.0f} tasks/s; "
                                                      + rss_note())
            tg.cancel_scope.cancel()
    check(row, fates, 0)
    # Memory must level off: the last fifth of the run may not sit far above the second fifth.
    n = len(samples)
    assert n >= 10, samples
    early = max(r for _, r in samples[n // 5: 2 * n // 5])
    late = max(r for _, r in samples[4 * n // 5:])
    assert late <= early * 1.25 + 20 * 1024, f"dispatcher RSS grew from {early} KiB to {late} KiB: {rss_note()}"


def rss_summary(samples: list[tuple[float, int]]) -> str:
    if not samples:
        return "no RSS samples"
    values = [r for _, r in samples]
    fifths = "/".join(f"{values[min(len(values) - 1, len(values) * k // 5)] / 1024:.0f}" for k in range(1, 6))
    return (f"dispatcher RSS MiB start {values[0] / 1024:.0f}, at each fifth of the run {fifths}, "
            f"peak {max(values) / 1024:.0f} ({len(values)} samples, 1/s)")


async def _no_fault(rig: Rig, marks: Faults, j: int) -> None:
    raise AssertionError("the soak injects no faults")
