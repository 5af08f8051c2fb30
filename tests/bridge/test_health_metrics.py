"""/metrics after a known workload, and /healthz and /readyz across a NATS outage, over real HTTP."""

from __future__ import annotations

from typing import Any

import anyio
import jetbridge
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.dispatcher import Dispatcher
from bridge.embedded import NatsServer
from bridge.health import serve_health
from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def http_get(port: int, path: str) -> tuple[int, str]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        try:
            while True:
                data += await stream.receive()
        except anyio.EndOfStream:
            pass
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split(" ")[1]), body


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_metrics_after_a_known_workload(nc: Any, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue()

    async def work(task: jetbridge.Task) -> Any:
        if task.payload == "terminate":
            raise jetbridge.Terminate("no")
        if task.payload == "flaky" and task.attempt == 1:
            raise jetbridge.Retry("again")
        return "ok"

    async with h.service({"w": work}), anyio.create_task_group() as tg:
        d = await tg.start(Dispatcher(nc, h.settings()).run)
        port = await tg.start(serve_health, "127.0.0.1:0", d.metrics, lambda: d.ready)
        for p in ["a", "b", "c", "terminate", "flaky"]:
            await h.run("w", p)
        status, text = await http_get(port, "/metrics")
        d.stop()
        tg.cancel_scope.cancel()
    assert status == 200
    tasks = samples(text, "jetbridge_tasks_total")
    q, t = ("queue", h.queue), ("type", "w")
    assert tasks[(q, ("state", "complete"), t)] == 4
    assert tasks[(q, ("state", "terminated"), t)] == 1
    assert tasks[(q, ("state", "retry"), t)] == 1
    assert tasks[(q, ("state", "active"), t)] == 6
    assert samples(text, "jetbridge_retries_total")[(q, t)] == 1
    durations = samples(text, "jetbridge_attempt_duration_seconds_count")
    assert durations[(("outcome", "complete"), q, t)] == 4
    assert samples(text, "jetbridge_in_flight")[(q,)] == 0


async def test_readiness_follows_the_nats_connection(own_server: NatsServer, unique: str) -> None:
    disconnected, reconnected = anyio.Event(), anyio.Event()

    async def on_disconnect() -> None:
        disconnected.set()

    async def on_reconnect() -> None:
        reconnected.set()

    nc = await nats.connect(own_server.url, reconnect_time_wait=0.2, max_reconnect_attempts=-1,
                            disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
    h = Harness(nc, unique)
    await h.make_queue()

    async def work(task: jetbridge.Task) -> Any:
        return task.payload

    async with anyio.create_task_group() as tg:
        d = await tg.start(Dispatcher(nc, h.settings()).run)
        port = await tg.start(serve_health, "127.0.0.1:0", d.metrics, lambda: nc.is_connected and d.ready)
        assert (await http_get(port, "/readyz"))[0] == 200
        await anyio.to_thread.run_sync(own_server.stop)
        with anyio.fail_after(10):
            await disconnected.wait()
        assert (await http_get(port, "/readyz"))[0] == 503
        assert (await http_get(port, "/healthz"))[0] == 200
        await anyio.to_thread.run_sync(own_server.start)
        with anyio.fail_after(20):
            await reconnected.wait()
        assert (await http_get(port, "/readyz"))[0] == 200
        async with h.service({"after": work}):
            record = await h.run("after", "restart survived", timeout=30)
        assert record.state == "complete"
        d.stop()
        tg.cancel_scope.cancel()
    await nc.close()
