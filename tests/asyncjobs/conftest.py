"""Fixtures for the asyncjobs compatibility tests: the ajcompat Go driver, built from interop/asyncjobs.

ajcompat wraps the real choria asyncjobs Go module (pinned in interop/asyncjobs/go.mod); the tests run it as a
subprocess against the session's nats-server while the Jetbridge dispatcher runs in-process. Go is required:
without it these tests fail rather than skip, because they are the only proof of compatibility.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from bridge.embedded import NatsServer

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "interop" / "asyncjobs" / "build.sh"
BINARY = REPO / ".build" / "asyncjobs" / "ajcompat"


@pytest.fixture(scope="session")
def ajcompat_binary() -> Path:
    """Build ajcompat once per session (Go's build cache makes a rebuild cheap)."""
    if not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()):
        pytest.fail("Go is required for the asyncjobs compatibility tests (tests/asyncjobs): install Go 1.22 or newer")
    result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"building ajcompat failed:\n{result.stdout}\n{result.stderr}")
    return BINARY


class Background:
    """A running ajcompat subcommand whose stdout is read line by line."""

    def __init__(self, process: Process, stderr: Path) -> None:
        self.process = process
        self._stdout = BufferedByteReceiveStream(process.stdout) if process.stdout else None
        self._stderr = stderr

    async def line(self, within: float = 20.0) -> str:
        assert self._stdout is not None
        with anyio.fail_after(within):
            return (await self._stdout.receive_until(b"\n", 1 << 20)).decode()

    async def ready(self) -> None:
        first = await self.line()
        assert first == "ready", f"expected 'ready', got {first!r}; stderr: {self.stderr()}"

    async def objects(self, within: float = 60.0) -> list[dict[str, Any]]:
        """Every JSON line until the process exits (within ``within`` seconds); fails if it exits non-zero."""
        lines: list[dict[str, Any]] = []
        with anyio.fail_after(within):
            while True:
                try:
                    lines.append(json.loads(await self.line(within)))
                except (anyio.IncompleteRead, anyio.EndOfStream):
                    break
            code = await self.process.wait()
        assert code == 0, f"ajcompat exited {code}; stderr: {self.stderr()}"
        return lines

    def stderr(self) -> str:
        return self._stderr.read_text(errors="replace")[-4000:]


class AJ:
    """Runs ajcompat subcommands against one nats-server."""

    def __init__(self, binary: Path, url: str, tmp: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "NATS_URL": url}
        self.tmp = tmp
        self._n = 0

    async def json(self, command: str, *args: str, within: float = 30.0) -> dict[str, Any]:
        """Run a short subcommand and return the JSON object it prints."""
        with anyio.fail_after(within):
            result = await anyio.run_process([str(self.binary), command, *args], env=self.env, check=False)
        if result.returncode != 0:
            raise AssertionError(f"ajcompat {command} {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.decode(errors='replace')}")
        return json.loads(result.stdout.decode().strip().splitlines()[-1])

    async def enqueue(self, queue: str, task_type: str, payload: Any = None, *args: str) -> str:
        """Enqueue with asyncjobs' client; ``None`` enqueues a nil payload (``"payload": null``)."""
        body = () if payload is None else ("--payload", json.dumps(payload))
        return str((await self.json("enqueue", "--queue", queue, "--type", task_type, *body, *args))["id"])

    async def get(self, task_id: str) -> dict[str, Any]:
        return await self.json("get", task_id)

    @asynccontextmanager
    async def start(self, command: str, *args: str) -> AsyncIterator[Background]:
        """Start a long-running subcommand; it is stopped (SIGTERM, then SIGKILL) when the block ends."""
        self._n += 1
        stderr = self.tmp / f"ajcompat-{self._n}-{command}.stderr"
        with stderr.open("wb") as err:
            process = await anyio.open_process([str(self.binary), command, *args], env=self.env, stderr=err)
        bg = Background(process, stderr)
        try:
            yield bg
        finally:
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await process.aclose()


@pytest.fixture
def aj(ajcompat_binary: Path, nats_server: NatsServer, tmp_path: Path) -> AJ:
    return AJ(ajcompat_binary, nats_server.url, tmp_path)
