"""High availability: ``@every 1s`` fired by 2 and 3 dispatcher processes while a random one is SIGKILLed and
restarted every few seconds, and across a nats-server restart. Every slot must be fired exactly once or be counted
missed; the store is the judge (a slot's task id is derived from the slot, so the ledger reads it back).

The default suite runs 30 slots per case; ``--full-scale`` (or ``JETBRIDGE_FULL_SCALE=1``) runs 240. Each case
prints one row of the table the issue asks for: ``pytest tests/schedules/test_ha.py -s``.
"""

from __future__ import annotations

import collections
import os
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import nats
import pytest
from jetbridge._cron import slot_task_id
from jetbridge._errors import TaskNotFoundError
from jetbridge._requester import Requester
from jetbridge._store import TaskStore
from nats.aio.client import Client

from bridge.embedded import NatsServer
from bridge.queues import QueueAdmin, QueueConfig
from tests.faults.rig import Proc, _clean_env

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(1800)]
QUEUE = "HA"
PREFIX = "jb.ha"


def slots_wanted(config: pytest.Config) -> int:
    full = bool(config.getoption("full_scale", default=False)) or os.environ.get("JETBRIDGE_FULL_SCALE") == "1"
    return 240 if full else 30


@dataclass
class Row:
    case: str
    slots: int = 0
    fired: int = 0
    missed: int = 0
    skipped: int = 0
    duplicates: int = 0
    kills: int = 0
    restarts: int = 0

    def line(self) -> str:
        return (f"| {self.case} | {self.slots} | {self.fired} | {self.missed} | {self.skipped} | {self.duplicates} "
                f"| {self.kills} | {self.restarts} |")


class World:
    """A nats-server, dispatcher processes, an in-process handler and a ledger of task creations."""

    def __init__(self, tmp: Path) -> None:
        self.server = NatsServer(tmp / "nats")
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.dispatchers: list[Proc] = []
        self.created: collections.Counter[str] = collections.Counter()
        self.runs: collections.Counter[str] = collections.Counter()

    def dispatcher(self) -> Proc:
        cmd = [sys.executable, "-m", "bridge", "--server", self.server.url, "run", "--queue", QUEUE,
               "--log-format", "json"]
        env = {**_clean_env(), "JETBRIDGE_SUBJECT_PREFIX": PREFIX, "JETBRIDGE_CREATE_QUEUES": "false",
               "JETBRIDGE_SHUTDOWN_GRACE": "5s"}
        proc = Proc(f"dispatcher{len(self.dispatchers) + 1}", cmd, env, self.logs, b'"dispatcher_started"')
        self.dispatchers.append(proc)
        return proc.start()

    async def on_event(self, msg: Any) -> None:
        from jetbridge._events import decode_event

        event = decode_event(msg.data)
        if event.state == "new":
            self.created[event.task_id] += 1


@asynccontextmanager
async def world(tmp: Path, dispatchers: int) -> AsyncIterator[tuple[World, Client]]:
    w = World(tmp)
    w.server.start()
    async def quiet(exc: Exception) -> None:  # the server restart case: reconnect attempts fail until it is back
        pass

    nc = await nats.connect(w.server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=quiet)
    await QueueAdmin(Requester(nc)).add(QueueConfig(name=QUEUE, retry="fixed:0.2", lease=2.0, max_run_time=10.0))
    await nc.subscribe("CHORIA_AJ.E.task_state.*", cb=w.on_event)

    async def tick(task: jetbridge.Task) -> Any:
        w.runs[task.id] += 1
        return "ok"

    service = jetbridge.Service(nc, "ha-ticks", prefix=PREFIX)
    service.add_handler("tick", tick)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
            for _ in range(dispatchers):
                w.dispatcher()
            for proc in w.dispatchers:
                await proc.wait_ready()
            yield w, nc
            service.stop()
    finally:
        for proc in w.dispatchers:
            await proc.kill()
        await nc.close()
        w.server.stop()


async def judge(w: World, nc: Client, schedules: jetbridge.Schedules, name: str, row: Row) -> Row:
    """Read every slot since the schedule began back from the store."""
    view = await schedules.get(name)
    spec, state = view.doc.spec, view.state
    slots = spec.slots(view.doc.start_ns, state.cursor, 100_000)
    store = TaskStore(Requester(nc))
    found = 0
    for slot in slots:
        try:
            await store.load_raw(slot_task_id(name, slot))
            found += 1
        except TaskNotFoundError:
            pass
    row.slots, row.fired, row.missed, row.skipped = len(slots), found, state.missed, state.skipped
    row.duplicates = sum(n - 1 for n in w.created.values() if n > 1)
    print(f"\n{row.line()}   (state: fires {state.fires}, missed {state.missed}; handler runs > 1: "
          f"{sum(1 for n in w.runs.values() if n > 1)})")
    assert found == state.fires, f"tasks in the store {found} != fires recorded {state.fires}"
    assert found + state.missed + state.skipped == len(slots), row
    assert row.duplicates == 0, row
    return row


async def wait_slots(schedules: jetbridge.Schedules, name: str, count: int, within: float) -> None:
    with anyio.fail_after(within):
        while (await schedules.get(name)).state.fires < count:  # noqa: ASYNC110 - state is stored, not evented
            await anyio.sleep(0.5)


@pytest.mark.parametrize("dispatchers", [2, 3])
async def test_every_slot_once_while_dispatchers_are_killed(
    tmp_path: Path, dispatchers: int, request: pytest.FixtureRequest,
) -> None:
    wanted = slots_wanted(request.config)
    row = Row(f"{dispatchers} dispatchers, SIGKILL a random one every 2-5 s")
    rng = random.Random(dispatchers)
    async with world(tmp_path, dispatchers) as (w, nc):
        schedules = jetbridge.Schedules(nc)
        name = f"ha{dispatchers}"
        await schedules.add(name, "@every 1s", "tick", {"n": 1}, queue=QUEUE, overlap="allow", catchup=120)
        with anyio.fail_after(wanted * 4 + 120):
            while (await schedules.get(name)).state.fires < wanted:
                await anyio.sleep(rng.uniform(2.0, 5.0))
                victim = rng.choice(w.dispatchers)
                await victim.kill()
                row.kills += 1
                victim.start()
                await victim.wait_ready()
        await schedules.pause(name)
        await judge(w, nc, schedules, name, row)
        assert row.missed == 0  # one dispatcher was always up: nothing may fall out of the window
        await schedules.close()


async def test_every_slot_once_across_a_nats_server_restart(tmp_path: Path) -> None:
    row = Row("2 dispatchers, nats-server stopped for 3 s and restarted")
    async with world(tmp_path, 2) as (w, nc):
        schedules = jetbridge.Schedules(nc)
        await schedules.add("hasrv", "@every 1s", "tick", {"n": 1}, queue=QUEUE, overlap="allow", catchup=60)
        await wait_slots(schedules, "hasrv", 4, 60)
        w.server.stop()
        row.restarts += 1
        await anyio.sleep(3.0)  # the outage itself, not synchronisation
        w.server.start()
        before = (await schedules.get("hasrv")).state.fires
        await wait_slots(schedules, "hasrv", before + 6, 90)
        await schedules.pause("hasrv")
        await judge(w, nc, schedules, "hasrv", row)
        assert row.missed == 0 and row.fired >= 10
        await schedules.close()


async def test_slots_older_than_the_catchup_window_are_counted_missed(tmp_path: Path) -> None:
    row = Row("all dispatchers down 8 s, catch-up window 3 s")
    async with world(tmp_path, 2) as (w, nc):
        schedules = jetbridge.Schedules(nc)
        await schedules.add("hamiss", "@every 1s", "tick", {"n": 1}, queue=QUEUE, overlap="allow", catchup=3)
        await wait_slots(schedules, "hamiss", 3, 60)
        for proc in w.dispatchers:
            await proc.kill()
            row.kills += 1
        await anyio.sleep(8.0)  # the outage itself
        for proc in w.dispatchers:
            proc.start()
        for proc in w.dispatchers:
            await proc.wait_ready()
        before = (await schedules.get("hamiss")).state.fires
        await wait_slots(schedules, "hamiss", before + 3, 60)
        await schedules.pause("hamiss")
        await judge(w, nc, schedules, "hamiss", row)
        assert row.missed >= 3  # the slots more than 3 s old when a dispatcher came back
        await schedules.close()
