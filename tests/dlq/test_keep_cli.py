"""`jetbridge dlq keep` as README runs it: it serves the index to other commands and exports the gauge."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from typing import Any

import anyio
import pytest
from jetbridge._requester import Requester
from jetbridge._store import TaskStore

from bridge.embedded import NatsServer, free_port

pytestmark = pytest.mark.anyio


async def test_dlq_keep_serves_commands_and_exports_the_gauge(h: Any, nats_server: NatsServer) -> None:
    store = TaskStore(Requester(h.nc))
    task_id = await h.producer.enqueue(f"{h.unique}:x", 1)
    task, seq = await store.load(task_id)
    task.state, task.last_err_code = "expired", "deadline"
    await store.save(task, seq)
    port = free_port()
    keeper = subprocess.Popen(  # noqa: ASYNC220 - its output is read in a thread
        [sys.executable, "-m", "bridge", "--server", nats_server.url, "dlq", "keep", "--metrics", f"127.0.0.1:{port}",
         "--interval", "1s"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"JETBRIDGE_LOG_FORMAT": "json", "PATH": ""})
    try:
        assert keeper.stdout is not None
        while "dlq_keeper_started" not in (line := await anyio.to_thread.run_sync(keeper.stdout.readline)):
            assert line, "dlq keep exited before it started"
        listed = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-m", "bridge", "--server", nats_server.url, "dlq", "list", "--queue", h.queue,
             "--count"], capture_output=True, text=True, timeout=60))
        assert listed.stdout.strip() == "1", listed.stderr
        metrics = await anyio.to_thread.run_sync(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
        assert f'jetbridge_dead_letters_stored{{queue="{h.queue}"}} 1.0' in metrics  # set before it said started
    finally:
        keeper.terminate()
        keeper.wait(30)
    assert keeper.returncode in (0, -15)
