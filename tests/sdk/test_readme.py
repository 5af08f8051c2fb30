"""The SDK README's examples run as written, against a real dispatcher, and print what the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from jetbridge._requester import Requester
from nats.aio.client import Client

from bridge.dispatcher import Dispatcher
from bridge.embedded import NatsServer
from bridge.queues import QueueAdmin, QueueConfig
from bridge.settings import Settings

pytestmark = pytest.mark.anyio
README = Path(__file__).resolve().parents[2] / "sdk-python" / "README.md"


def blocks() -> dict[str, str]:
    text = README.read_text()
    code = {m.group(2): m.group(1) for m in re.finditer(r"```python\n(# (\S+\.py)\n.*?)```", text, re.S)}
    output = re.search(r"prints:\n\n```\n(.*?)```", text, re.S)
    assert output is not None
    code["expected output"] = output.group(1)
    return code


async def test_readme_examples_run_as_written(own_server: NatsServer, tmp_path: Path) -> None:
    code = blocks()
    for name in ("mailer.py", "enqueue.py"):
        (tmp_path / name).write_text(code[name])
    import nats

    nc: Client = await nats.connect(own_server.url)
    await QueueAdmin(Requester(nc)).add(QueueConfig(name="EMAIL", retry="fixed:0.1"))
    env = {**os.environ, "NATS_URL": own_server.url}
    async with anyio.create_task_group() as tg:
        dispatcher = await tg.start(Dispatcher(nc, Settings(queues=("EMAIL",))).run)
        mailer = subprocess.Popen([sys.executable, str(tmp_path / "mailer.py")], env=env,  # noqa: ASYNC220 - read in a thread
                                  stdout=subprocess.PIPE)
        try:
            assert mailer.stdout is not None
            line = await anyio.to_thread.run_sync(mailer.stdout.readline)
            assert line.strip() == b"mailer ready"
            result = await anyio.to_thread.run_sync(lambda: subprocess.run(
                [sys.executable, str(tmp_path / "enqueue.py")], env=env, capture_output=True, timeout=60))
        finally:
            mailer.terminate()
            mailer.wait(20)
        dispatcher.stop()
    await nc.close()
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == code["expected output"]
    assert mailer.returncode == 0
