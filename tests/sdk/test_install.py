"""jetbridge-sdk installs with what it declares: a fresh venv with only the SDK imports it and serves a request.

Issue 14: ``import jetbridge`` failed outside the repo's venv because ``structlog`` was not declared. The repo's
venv has every dependency of both distributions, so only a clean environment shows such a gap.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.embedded import NatsServer

SDK = Path(__file__).resolve().parents[2] / "sdk-python"

SCRIPT = textwrap.dedent("""
    import json, sys
    import anyio, nats, jetbridge

    async def main(url):
        nc = await nats.connect(url)
        service = jetbridge.Service(nc, "install-check", prefix="install")

        @service.handler("echo")
        async def echo(task):
            return task.payload

        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
            body = {"type": "io.jetbridge.v1.task_request", "protocol": 1, "task_id": "t1", "task_type": "echo",
                    "queue": "Q", "attempt": 1, "max_attempts": 1, "created": "2026-11-24T10:00:00.000Z",
                    "deadline": None, "attempt_token": "a1B2c3D4e5F6g7H8",
                    "attempt_deadline": "2026-11-24T10:01:00.000Z", "budget_ms": 5000, "heartbeat_subject": "hb.x",
                    "heartbeat_interval_ms": 0, "cancel_subject": "cancel.x", "payload_encoding": "json",
                    "content_type": "application/json", "payload": {"ok": 1}}
            reply = await nc.request("install.echo", json.dumps(body).encode(), timeout=10)
            print(reply.data.decode())
            service.stop()
        await nc.close()

    anyio.run(main, sys.argv[1])
""")


def test_the_sdk_alone_imports_and_serves(tmp_path: Path, nats_server: NatsServer) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    source = tmp_path / "sdk-python"  # a copy: pip builds in the source tree, which must stay clean
    shutil.copytree(SDK, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(source)], capture_output=True, text=True)
    if install.returncode != 0:
        pytest.fail(f"pip install sdk-python failed:\n{install.stderr[-2000:]}")
    run = subprocess.run([str(python), "-c", SCRIPT, nats_server.url], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # not the repo root: nothing of the checkout is importable
    assert run.returncode == 0, run.stderr[-2000:]
    reply = json.loads(run.stdout.strip().splitlines()[-1])
    assert (reply["status"], reply["result"]) == ("ok", {"ok": 1})
