"""Protocol 1.1 handler rules of the Python SDK, at the protocol level: this test plays the dispatcher.

Receipt heartbeat (SPEC §5.1), heartbeats as requests and self-fencing (§5.2), budget exhaustion as a `timeout`
cancel whose reply is still sent (§3.3), truthful micro stats (§2), retry_after clamping (§4), endpoint names.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import jetbridge
import nats
import pytest
from jetbridge import _protocol as proto
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.harness import Harness
from tests.sdk.test_service import request_body

pytestmark = pytest.mark.anyio


def body_for(token: str, task_type: str = "work", **overrides: Any) -> bytes:
    return request_body(task_type, attempt_token=token, heartbeat_subject=f"hb.{token}",
                        cancel_subject=f"cancel.{token}", **overrides)


class HeartbeatListener:
    """The dispatcher's per-attempt heartbeat subscription: records arrivals, acks like a 1.1 dispatcher if asked."""

    def __init__(self, nc: Client, token: str, *, ack: bool) -> None:
        self.nc, self.subject, self.ack = nc, f"hb.{token}", ack
        self.send, self.arrivals = anyio.create_memory_object_stream[float](1000)
        self.sub: Any = None

    async def __aenter__(self) -> HeartbeatListener:
        self.sub = await self.nc.subscribe(self.subject, cb=self._on_beat)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_beat(self, msg: Msg) -> None:
        proto.decode_heartbeat(msg.data)
        self.send.send_nowait(time.monotonic())
        if self.ack and msg.reply:
            await msg.respond(b"")

    async def stop(self) -> None:
        """The attempt ended at the dispatcher: nobody listens any more (heartbeats get no responders)."""
        if self.sub is not None:
            # Shielded: a cancelled flush leaves nats-py's PONG queue broken and the connection unusable.
            with anyio.CancelScope(shield=True):
                await self.sub.unsubscribe()
                await self.nc.flush()
            self.sub = None


async def test_receipt_heartbeat_arrives_while_the_request_waits_for_a_worker(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    release, started = anyio.Event(), []

    async def work(task: jetbridge.Task) -> Any:
        started.append(task.token)
        if task.token == "firsttoken1":
            await release.wait()
        return None

    async with h.service({"work": work}, concurrency=1), anyio.create_task_group() as tg:
        tg.start_soon(nc.request, f"{h.prefix}.work", body_for("firsttoken1"), 10)
        async with HeartbeatListener(nc, "secondtoken2", ack=False) as beats:
            tg.start_soon(nc.request, f"{h.prefix}.work", body_for("secondtoken2", heartbeat_interval_ms=60000), 10)
            with anyio.fail_after(5):
                await beats.arrivals.receive()  # the interval is a minute: only the receipt heartbeat comes now
            assert started == ["firsttoken1"], "the heartbeat came while the request waited for the worker"
            release.set()


async def drain_arrivals(beats: HeartbeatListener) -> None:
    async for _ in beats.arrivals:
        pass


async def run_until_fenced(nc: Client, h: Harness, token: str, *, ack: bool, interval_ms: int,
                           stop_after: int | None) -> tuple[list[str | None], Msg, float]:
    """Serve one attempt with heartbeat_ack; after ``stop_after`` heartbeats the dispatcher side goes away
    (None: it stays subscribed). Returns the handler's cancel reasons, the reply, and the seconds from the
    dispatcher side's change to the reply."""
    reasons: list[str | None] = []

    async def work(task: jetbridge.Task) -> Any:
        try:
            await anyio.sleep(30)
        finally:
            reasons.append(task.cancel_reason)

    replies: list[Msg] = []
    done = anyio.Event()
    async with h.service({"work": work}), anyio.create_task_group() as tg:
        async with HeartbeatListener(nc, token, ack=ack) as beats:
            async def ask() -> None:
                replies.append(await nc.request(f"{h.prefix}.work", body_for(
                    token, heartbeat_interval_ms=interval_ms, heartbeat_ack=True, budget_ms=20000), 15))
                done.set()

            tg.start_soon(ask)
            with anyio.fail_after(10):
                for _ in range(stop_after or 0):
                    await beats.arrivals.receive()
            assert reasons == []
            if stop_after is not None:
                await beats.stop()
            changed = time.monotonic()
            tg.start_soon(drain_arrivals, beats)
            with anyio.fail_after(10):  # the reply comes only once the attempt is fenced (the budget is 20 s)
                await done.wait()
            tg.cancel_scope.cancel()
    return reasons, replies[0], time.monotonic() - changed


async def test_no_responders_on_a_heartbeat_fences_the_attempt_as_lost(nc: Client, unique: str) -> None:
    reasons, reply, _ = await run_until_fenced(nc, Harness(nc, unique), "nrtoken00001", ack=True, interval_ms=200,
                                               stop_after=3)
    assert reasons == ["lost"]
    outcome = proto.interpret_reply(reply.headers, reply.data)
    assert (outcome.kind, outcome.error_code) == ("retry", "cancelled")  # whatever it returns is still sent


async def test_heartbeats_that_are_never_acked_fence_the_attempt_after_the_heartbeat_timeout(
        nc: Client, unique: str) -> None:
    # A subscriber that never answers: each heartbeat request times out; 3 intervals after receipt it is lost.
    reasons, reply, waited = await run_until_fenced(nc, Harness(nc, unique), "silenttoken1", ack=False,
                                                    interval_ms=200, stop_after=None)
    assert reasons == ["lost"]
    assert waited >= 0.5  # 3 x 200 ms from receipt, measured here from just after the start
    assert proto.interpret_reply(reply.headers, reply.data).error_code == "cancelled"


async def test_without_heartbeat_ack_heartbeats_are_publishes_and_nothing_is_fenced(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)

    async def work(task: jetbridge.Task) -> Any:
        await anyio.sleep(0.6)  # 6 intervals with nobody listening to the heartbeats
        return task.cancel_reason

    async with h.service({"work": work}):
        reply = await nc.request(f"{h.prefix}.work", body_for("plaintoken01", heartbeat_interval_ms=100), 10)
    assert proto.interpret_reply(reply.headers, reply.data).result is None


async def test_budget_exhaustion_cancels_with_timeout_and_the_reply_is_still_sent(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)

    async def work(task: jetbridge.Task) -> Any:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            return {"reason": task.cancel_reason}  # a late reply (the dispatcher counts it stale), still sent
        return None

    async with h.service({"work": work}):
        reply = await nc.request(f"{h.prefix}.work", body_for("budgettoken1", budget_ms=200), 10)
    assert proto.interpret_reply(reply.headers, reply.data).result == {"reason": "timeout"}


async def test_micro_stats_count_failures_and_real_processing_time(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)

    async def work(task: jetbridge.Task) -> Any:
        kind = task.payload["kind"]
        if kind == "retry":
            raise jetbridge.Retry("again", after=10**9)  # also: retry_after_ms is clamped to 7 days
        if kind == "terminate":
            raise jetbridge.Terminate("no")
        if kind == "panic":
            raise RuntimeError("boom")
        await anyio.sleep(0.3)
        return "ok"

    async with h.service({"work": work}):
        replies = {}
        for n, kind in enumerate(["retry", "terminate", "panic", "slow"]):
            msg = await nc.request(f"{h.prefix}.work", body_for(f"statstoken{n:02d}", payload={"kind": kind}), 10)
            replies[kind] = proto.interpret_reply(msg.headers, msg.data)
        await nc.request(f"{h.prefix}.work", b"{nope", timeout=10)  # a rejection
        stats = json.loads((await nc.request(f"$SRV.STATS.svc-{h.unique}", b"", timeout=5)).data)
    (endpoint,) = stats["endpoints"]
    assert endpoint["num_requests"] == 5
    assert endpoint["num_errors"] == 4  # retry, terminate, panic (a retry), rejection
    assert endpoint["processing_time"] >= 300_000_000  # the slow handler's real 0.3 s, in ns
    assert replies["retry"].retry_after_ms == proto.MAX_RETRY_AFTER_MS
    assert replies["slow"].result == "ok"


async def test_task_types_that_share_an_endpoint_name_are_refused(nc: Client) -> None:
    service = jetbridge.Service(nc, "clash")
    service.add_handler("a:b", lambda task: None)
    with pytest.raises(jetbridge.ConfigError, match="a_b"):
        service.add_handler("a_b", lambda task: None)


async def test_the_service_rides_out_a_server_restart_and_finishes_its_attempt(own_server: Any) -> None:
    """SPEC §2: a handler re-subscribes after a restart, and an attempt running across it still replies."""
    clients, reconnects = [], []
    for _ in range(2):  # the handler's connection, and the requester's (the dispatcher's role)
        reconnected = anyio.Event()

        async def on_reconnect(event: anyio.Event = reconnected) -> None:
            event.set()

        clients.append(await nats.connect(own_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1,
                                          reconnected_cb=on_reconnect))
        reconnects.append(reconnected)
    nc, requester = clients
    h = Harness(nc, "restart")
    running, release = anyio.Event(), anyio.Event()

    async def work(task: jetbridge.Task) -> Any:
        if task.payload.get("wait"):
            running.set()
            await release.wait()
        return task.payload

    replies: list[Msg] = []

    async def ask() -> None:  # sent before the restart, answered after it
        replies.append(await requester.request(f"{h.prefix}.work", body_for("acrosstoken1", payload={"wait": True}),
                                               30))

    try:
        async with h.service({"work": work}):
            await nc.flush()  # the server has the service's subscriptions before the other client asks
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                with anyio.fail_after(10):
                    await running.wait()
                await anyio.to_thread.run_sync(own_server.stop)
                await anyio.to_thread.run_sync(own_server.start)
                with anyio.fail_after(20):
                    for reconnected in reconnects:
                        await reconnected.wait()
                release.set()
            fresh = await requester.request(f"{h.prefix}.work", body_for("aftertoken01", payload={"n": 1}), 10)
    finally:
        for client in clients:
            await client.close()
    assert proto.interpret_reply(replies[0].headers, replies[0].data).result == {"wait": True}
    assert proto.interpret_reply(fresh.headers, fresh.data).result == {"n": 1}


async def test_explicit_heartbeats_never_wait_for_an_ack(nc: Client, unique: str) -> None:
    """With heartbeat_ack, progress heartbeats go out in the background: a slow dispatcher (here: one that never
    answers) must not hold the handler, and so a worker slot, for up to an interval per heartbeat."""
    h = Harness(nc, unique)
    took: list[float] = []

    async def work(task: jetbridge.Task) -> Any:
        started = time.monotonic()
        for i in range(3):
            await task.heartbeat(i / 3, f"step {i}")
        took.append(time.monotonic() - started)
        return None

    async with h.service({"work": work}), HeartbeatListener(nc, "slowacktoken", ack=False):
        await nc.request(f"{h.prefix}.work", body_for("slowacktoken", heartbeat_interval_ms=5000,
                                                      heartbeat_ack=True), 10)
    assert took[0] < 2.5  # an interval is 5 s: waiting for even one ack would take longer
