"""Issue 13, item 2: a dispatcher SIGSTOPped mid-attempt for longer than its lease.

Its item lease runs out and another dispatcher gets the task. Before, the second dispatcher started attempt 2 at
once while attempt 1 still ran on its handler (for as long as the pause lasted). Now the handler (protocol 1.1)
fences itself when its heartbeats stop being acknowledged, and the takeover waits one more heartbeat timeout, so
attempt 2 starts only after attempt 1 has stopped; the paused dispatcher, resumed, cannot overwrite the outcome.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import anyio
import jetbridge
import pytest
from nats.aio.client import Client

from bridge.embedded import NatsServer
from tests.harness import Harness

pytestmark = pytest.mark.anyio


def _dispatcher(server: NatsServer, h: Harness) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bridge", "--server", server.url, "run", "--queue", h.queue, "--log-format", "json"]
    env = {**os.environ, "JETBRIDGE_SUBJECT_PREFIX": h.prefix, "JETBRIDGE_CREATE_QUEUES": "false",
           "JETBRIDGE_FIRE_SCHEDULES": "false"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_a_paused_dispatcher_never_leaves_two_attempts_running(nats_server: NatsServer, nc: Client,
                                                                      unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=1.0, max_run_time=60)
    attempts: dict[int, dict[str, Any]] = {}
    first_started, second_started = anyio.Event(), anyio.Event()

    async def work(task: jetbridge.Task) -> Any:
        record: dict[str, Any] = {"start": time.monotonic()}
        attempts[task.attempt] = record
        try:
            if task.attempt == 1:
                first_started.set()
                await anyio.sleep(3600)  # runs until it is stopped
            second_started.set()
            return task.attempt
        finally:
            record["end"] = time.monotonic()
            record["reason"] = task.cancel_reason

    async with h.service({"job": work}):
        paused = _dispatcher(nats_server, h)
        try:
            task_id = await h.producer.enqueue("job", max_tries=5)
            with anyio.fail_after(30):
                await first_started.wait()
            async with h.dispatcher():
                paused.send_signal(signal.SIGSTOP)
                with anyio.fail_after(30):
                    await second_started.wait()
                paused.send_signal(signal.SIGCONT)
                record = await h.producer.wait(task_id, timeout=30)
        finally:
            paused.send_signal(signal.SIGCONT)
            paused.kill()
            paused.wait()
    assert attempts[1]["reason"] == "lost"
    assert attempts[1]["end"] <= attempts[2]["start"], attempts
    assert (record.state, record.tries, record.result and record.result.value()) == ("complete", 2, 2)
