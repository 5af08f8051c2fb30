"""``jetbridge handle`` follows the protocol 1.1 handler rules, tested at the protocol level (this test is the
dispatcher): a fenced attempt (its heartbeats get no responders) kills the command's process group as a cancel
with reason ``lost`` would, and ``nats micro stats`` counts failed commands as errors with their real run time."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest
from jetbridge import _protocol as proto
from nats.aio.client import Client

from tests.handle.conftest import Events, serving, wait_gone
from tests.harness import Harness
from tests.sdk.test_service_11 import HeartbeatListener, body_for

pytestmark = pytest.mark.anyio


async def test_a_fenced_attempt_stops_the_command_and_its_group_with_reason_lost(
    nc: Client, unique: str, script: Any, events: Events,
) -> None:
    h = Harness(nc, unique)
    job = script("""
trap 'read -r word reason <&3; echo "publish $EVENTS stopped $word $reason" >&3; exit 143' TERM
sleep 60 &
echo "publish $EVENTS pids $$ $!" >&3
wait
""")
    async with serving(h, ["fence"], [job]), anyio.create_task_group() as tg:
        replies: list[Any] = []

        async def ask() -> None:
            replies.append(await nc.request(f"{h.prefix}.fence", body_for(
                "fencetoken01", "fence", heartbeat_interval_ms=200, heartbeat_ack=True, budget_ms=30000), 20))

        async with HeartbeatListener(nc, "fencetoken01", ack=True) as beats:
            tg.start_soon(ask)
            pids = await events.pids()
            with anyio.fail_after(5):
                await beats.arrivals.receive()
            await beats.stop()  # the attempt ended at the dispatcher: the next heartbeat gets no responders
        await events.wait_for(lambda t: t.startswith("stopped"))
    assert "stopped cancel lost" in events.texts()
    await wait_gone(*pids)
    outcome = proto.interpret_reply(replies[0].headers, replies[0].data)
    assert outcome.kind == "retry"  # sent even though the dispatcher counts it stale


async def test_micro_stats_count_failed_commands_and_their_real_time(
    nc: Client, unique: str, script: Any,
) -> None:
    h = Harness(nc, unique)
    job = script("""
sleep 0.3
[ "$(cat)" = '"ok"' ] || exit 3
""")
    async with serving(h, ["job"], [job]):
        started = time.monotonic()
        for n, payload in enumerate(["ok", "fail", "fail"]):
            await nc.request(f"{h.prefix}.job", body_for(f"stattoken{n:03d}", "job", payload=payload), 20)
        elapsed = time.monotonic() - started
        stats = json.loads((await nc.request(f"$SRV.STATS.handle-{h.unique}", b"", timeout=5)).data)
    (endpoint,) = stats["endpoints"]
    assert (endpoint["num_requests"], endpoint["num_errors"]) == (3, 2)
    assert 3 * 300_000_000 <= endpoint["processing_time"] <= elapsed * 1e9
