"""After the nats-server comes back, the dispatcher pulls again at once.

A pull request lives on the server; when the server restarts it is gone, and no status ever comes back for it. The
dispatcher's puller used to notice only when the pull's own expiry (5 s) plus a second had passed, so work waited
up to 6 s after every reconnect on top of the outage (the fault matrix measured ~10 s recoveries from a 1 s server
restart). It now starts a new pull as soon as the connection is back.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import nats
import pytest

from bridge.embedded import NatsServer
from tests.harness import Harness

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill"])
async def test_work_enqueued_after_a_server_restart_runs_promptly(tmp_path: Path, crash: bool) -> None:
    server = NatsServer(tmp_path / "nats").start()
    reconnected = anyio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    async def quiet(exc: Exception) -> None:  # the outage's connection errors are expected
        pass

    nc = await nats.connect(server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1,
                            reconnected_cb=on_reconnect, error_cb=quiet)
    try:
        h = Harness(nc, "restart")
        await h.make_queue()

        async def work(task: jetbridge.Task) -> Any:
            return task.payload

        async with h.dispatcher(), h.service({"job": work}):
            assert (await h.run("job", 1)).state == "complete"  # the puller's pull is out now
            server.kill() if crash else server.stop()
            await anyio.to_thread.run_sync(server.start)
            with anyio.fail_after(10):
                await reconnected.wait()
            back = time.monotonic()
            record = await h.run("job", 2, timeout=20)
            took = time.monotonic() - back
    finally:
        await nc.close()
        server.stop()
    assert record.state == "complete"
    assert took < 3.0, f"a task enqueued after the reconnect took {took:.1f}s to run"
