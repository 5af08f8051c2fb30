"""The SDK README's middleware sample runs as written, against a real dispatcher, and does what the README says:
the result is changed, the blocked domain is short-circuited, every attempt is logged and counted on /metrics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import anyio
import jetbridge
import nats
import pytest
from jetbridge._requester import Requester
from nats.aio.client import Client

from bridge.dispatcher import Dispatcher
from bridge.embedded import NatsServer
from bridge.queues import QueueAdmin, QueueConfig
from bridge.settings import Settings
from tests.sdk.test_readme import blocks

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def test_readme_middleware_sample_runs_as_written(own_server: NatsServer, tmp_path: Path) -> None:
    (tmp_path / "guarded_mailer.py").write_text(blocks()["guarded_mailer.py"])
    nc: Client = await nats.connect(own_server.url)
    await QueueAdmin(Requester(nc)).add(QueueConfig(name="EMAIL", retry="fixed:0.1"))
    port = free_port()
    env = {**os.environ, "NATS_URL": own_server.url, "METRICS_PORT": str(port)}
    producer = jetbridge.Producer(nc, queue="EMAIL")
    async with anyio.create_task_group() as tg:
        dispatcher = await tg.start(Dispatcher(nc, Settings(queues=("EMAIL",))).run)
        mailer = subprocess.Popen([sys.executable, str(tmp_path / "guarded_mailer.py")], env=env,  # noqa: ASYNC220 - read in a thread
                                  stdout=subprocess.PIPE)
        try:
            assert mailer.stdout is not None
            line = await anyio.to_thread.run_sync(mailer.stdout.readline)
            assert line.strip() == b"guarded mailer ready"
            sent = await producer.wait(await producer.enqueue("email:send", {"to": "ada@example.com"}), timeout=30)
            blocked = await producer.wait(await producer.enqueue("email:send", {"to": "x@example.invalid"}),
                                          timeout=30)
            metrics = await anyio.to_thread.run_sync(scrape, port)
        finally:
            mailer.terminate()
            output, _ = await anyio.to_thread.run_sync(mailer.communicate, None, 20)
        dispatcher.stop()
    await producer.close()
    await nc.close()
    assert mailer.returncode == 0
    assert sent.state == "complete" and sent.result is not None
    assert sent.result.value() == {"sent_to": "ada@example.com", "attempt": 1}
    assert (blocked.state, blocked.tries, blocked.last_err_code) == ("terminated", 1, "blocked_domain")
    assert output.decode().count("attempt_done") == 2
    assert 'jetbridge_handler_attempts_total{outcome="ok",type="email:send"} 1.0' in metrics
    assert 'jetbridge_handler_attempts_total{outcome="terminate",type="email:send"} 1.0' in metrics
