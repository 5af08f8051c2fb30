"""The samples of docs/asyncjobs.md, run as written (against the session's nats-server)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client

from bridge.embedded import NatsServer
from tests.asyncjobs.conftest import AJC, REPO

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(600)]

DOC = REPO / "docs" / "asyncjobs.md"


def sample(name: str) -> str:
    """The fenced block right after ``<!-- sample: NAME -->``."""
    match = re.search(rf"<!-- sample: {re.escape(name)} -->\n```\w*\n(.*?)\n```", DOC.read_text(), re.S)
    assert match, f"docs/asyncjobs.md has no sample {name!r}"
    return match.group(1)


async def run_sh(script: str, nats_server: NatsServer, tmp_path: Path) -> str:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/go/bin", "HOME": str(tmp_path),
           "NATS_URL": nats_server.url, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    with anyio.fail_after(500):
        result = await anyio.run_process(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, check=False)
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, f"{out}\n{result.stderr.decode(errors='replace')}"
    return out


async def test_ajcompat_sample(nats_server: NatsServer, tmp_path: Path) -> None:
    out = await run_sh(sample("ajcompat"), nats_server, tmp_path)
    assert '"asyncjobs":"v0.3.0"' in out and '"state":"complete"' in out


async def test_ajc_sample(ajc_bin: Path, nats_server: NatsServer, tmp_path: Path) -> None:
    out = await run_sh(sample("ajc"), nats_server, tmp_path)
    assert "nightly" in out and '"task_type": "report:nightly"' in out


async def test_schedule_json_sample(ajc: AJC, nc: Client, unique: str) -> None:
    """The documented document is what the documented `ajc tasks cron add` command writes (bar name and time)."""
    documented = json.loads(sample("schedule-json"))
    text = DOC.read_text()
    command = re.search(r"Example: the document `ajc (tasks cron add [^`]*)`", text.replace("\n", " "))
    assert command
    args = shlex.split(command.group(1))
    args[3] = name = f"n{unique}"
    await ajc.run(*args)
    kv = await nc.jetstream().key_value("CHORIA_AJ_CONFIGURATION")
    written = json.loads((await kv.get(f"scheduled_tasks.{name}")).value or b"")
    await kv.delete(f"scheduled_tasks.{name}")
    assert list(written) == list(documented)
    assert {**written, "name": "nightly", "created_at": ""} == {**documented, "created_at": ""}
