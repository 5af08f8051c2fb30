"""README's HTTP API sample runs as written: ``jetbridge serve`` and the curl commands against it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import nats
from jetbridge._requester import Requester

from bridge.embedded import NatsServer, free_port
from bridge.queues import QueueAdmin, QueueConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def sample() -> list[str]:
    block = re.search(r"## HTTP API and dashboard.*?```sh\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


async def _make_queue(url: str) -> None:
    nc = await nats.connect(url)
    await QueueAdmin(Requester(nc)).add(QueueConfig(name="EMAIL"))
    await nc.close()


def test_the_api_sample_runs_as_written(own_server: NatsServer) -> None:
    anyio.run(_make_queue, own_server.url)
    serve, *curls = sample()
    assert serve.startswith("jetbridge serve --listen 127.0.0.1:8080") and serve.endswith("&")
    port = free_port()
    argv = [sys.executable, "-m", "bridge", "--server", own_server.url,
            *serve.removesuffix("&").replace("8080", str(port)).split()[1:]]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and str(port) in proc.stdout.readline()
        for line in curls:
            command = line.replace("localhost:8080", f"127.0.0.1:{port}")
            streaming = "/v1/events" in line
            # curl retries while the server starts listening; the event stream is read for a second.
            extra = "--max-time 1 " if streaming else "--retry 30 --retry-connrefused --retry-delay 1 "
            command = command.replace("curl ", "curl " + extra, 1)
            done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
            if streaming:
                assert done.returncode == 28, done.stderr  # curl's "timed out": the stream stayed open
                continue
            assert done.returncode == 0, (line, done.stderr)
            body = json.loads(done.stdout)
            assert "error" not in body, (line, body)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
