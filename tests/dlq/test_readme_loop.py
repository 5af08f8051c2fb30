"""README's daily loop runs as written: find the failures, see why, fix, replay."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import nats
import pytest
from jetbridge._requester import Requester

from bridge.embedded import NatsServer
from bridge.queues import QueueAdmin, QueueConfig
from bridge.settings import Settings
from tests.harness import running_dispatcher, running_service

pytestmark = pytest.mark.anyio
README = Path(__file__).resolve().parents[2] / "README.md"


def loop_commands() -> list[str]:
    text = README.read_text()
    block = re.search(r"## Dead letters: the daily loop.*?```sh\n(.*?)```", text, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def cli(url: str, line: str) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(line)
    assert argv[0] == "jetbridge"
    env = {**os.environ, "COLUMNS": "250"}  # wide enough that tables show whole ids
    return subprocess.run([sys.executable, "-m", "bridge", "--server", url, *argv[1:]], capture_output=True,
                          text=True, timeout=120, env=env)


async def test_the_daily_loop_runs_as_written(own_server: NatsServer) -> None:
    nc = await nats.connect(own_server.url)
    await QueueAdmin(Requester(nc)).add(QueueConfig(name="EMAIL", retry="fixed:0.1"))
    fixed = anyio.Event()

    async def send(task: jetbridge.Task) -> Any:
        if not fixed.is_set() and task.payload.get("to") == "":
            raise jetbridge.Terminate("no recipient", code="bad_input")
        return "sent"

    producer = jetbridge.Producer(nc, queue="EMAIL")
    async with running_service(nc, "mailer", "jetbridge.task", {"email:new": send}), \
            running_dispatcher(nc, Settings(queues=("EMAIL",))):
        ids = [await producer.enqueue("email:new", {"to": ""}) for _ in range(3)]
        for task_id in ids:
            assert (await producer.wait(task_id, timeout=30)).state == "terminated"
        outputs = []
        for line in loop_commands():
            if "replay" in line and "--dry-run" not in line:
                fixed.set()  # the fix is deployed before the replay
            result = await anyio.to_thread.run_sync(cli, own_server.url, line.replace("$ID", ids[0]))
            assert result.returncode == 0, f"{line}: {result.stderr}"
            outputs.append(result.stdout)
        listed, count, shown, paused, dry, replayed, resumed = outputs[:7]
        assert all(task_id in listed for task_id in ids)
        assert count.strip() == "3"
        assert "no recipient" in shown and "#1" in shown and "terminate" in shown
        assert "paused until resumed since " in paused and paused.endswith(": fixing the mailer\n")
        assert dry.count("would replay") == 3
        assert "replayed 3 of 3 dead letters" in replayed
        assert "resumed" in resumed
        for task_id in ids:
            done = await producer.wait(task_id, timeout=30)
            while done.state != "complete":
                done = await producer.wait(task_id, timeout=30)
            assert done.replays == 1
        info = await anyio.to_thread.run_sync(cli, own_server.url, "jetbridge queue info EMAIL --json")
        assert json.loads(info.stdout)["paused"] == ""
    await producer.close()
    await nc.close()
