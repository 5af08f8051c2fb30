"""Fixtures for the asyncjobs compatibility tests: the ajcompat Go driver and asyncjobs' own ``ajc`` CLI.

ajcompat wraps the real choria asyncjobs Go module; interop/asyncjobs/build.sh builds it from one source against
each release in ``VERSIONS`` (v0.1.2 from go.mod, v0.3.0 from go.v030.mod), and every test that uses the ``aj``
fixture runs once per release (test ids end in ``[v0.1.2]`` / ``[v0.3.0]``). The tests run it as a subprocess
against the session's nats-server while the Jetbridge dispatcher runs in-process.

``ajc`` (fixture ``ajc``, binary ``ajc_bin``) is asyncjobs v0.3.0's CLI, for the scheduler scenarios::

    async def test_x(ajc: AJC) -> None:
        await ajc.run("tasks", "cron", "add", "nightly", "@every 1s", "email:new", "--queue", "EMAIL")
        listed = await ajc.run("tasks", "cron", "list", "--names")   # CompletedProcess; .stdout is text
        async with ajc.scheduler(nc, "sched-1"):  # asyncjobs' own scheduler, leading; stopped after the block
            ...

Go is required: without it these tests fail rather than skip, because they are the only proof of compatibility.
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
from nats.aio.client import Client
from nats.aio.msg import Msg

from bridge.embedded import NatsServer

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "interop" / "asyncjobs" / "build.sh"
VERSIONS = ("v0.1.2", "v0.3.0")
AJC_VERSION = "v0.3.0"


def build(version: str, what: str) -> Path:
    """Build ``what`` (ajcompat or ajc) for an asyncjobs release; Go's build cache makes a rebuild cheap."""
    if not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()):
        pytest.fail("Go is required for the asyncjobs compatibility tests (tests/asyncjobs): install Go 1.25 or newer")
    result = subprocess.run(["bash", str(BUILD), version, what], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"building {what} for asyncjobs {version} failed:\n{result.stdout}\n{result.stderr}")
    return REPO / ".build" / "asyncjobs" / version / what


@pytest.fixture(scope="session", params=VERSIONS)
def ajcompat_binary(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """(asyncjobs version, ajcompat built against it), once per version and session."""
    version = str(request.param)
    return version, build(version, "ajcompat")


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
    """Runs ajcompat subcommands (built against asyncjobs ``version``) against one nats-server."""

    def __init__(self, binary: Path, url: str, tmp: Path, version: str = VERSIONS[0]) -> None:
        self.binary = binary
        self.version = version
        self.env = {**os.environ, "NATS_URL": url}
        self.tmp = tmp
        self._n = 0

    async def json(self, command: str, *args: str, within: float = 30.0) -> dict[str, Any]:
        """Run a short subcommand and return the (last) JSON object it prints."""
        return (await self.lines(command, *args, within=within))[-1]

    async def lines(self, command: str, *args: str, within: float = 30.0) -> list[dict[str, Any]]:
        """Run a short subcommand and return every JSON object it prints, one per line."""
        with anyio.fail_after(within):
            result = await anyio.run_process([str(self.binary), command, *args], env=self.env, check=False)
        if result.returncode != 0:
            raise AssertionError(f"ajcompat {command} {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.decode(errors='replace')}")
        return [json.loads(line) for line in result.stdout.decode().strip().splitlines()]

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
            await _stop(process)


async def _stop(process: Process) -> None:
    """SIGTERM, then SIGKILL after 5s."""
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    await process.aclose()


@pytest.fixture
def aj(ajcompat_binary: tuple[str, Path], nats_server: NatsServer, tmp_path: Path) -> AJ:
    version, binary = ajcompat_binary
    return AJ(binary, nats_server.url, tmp_path, version)


@pytest.fixture(scope="session")
def ajc_bin() -> Path:
    """asyncjobs v0.3.0's ``ajc`` CLI, built once per session into .build/asyncjobs/v0.3.0/ajc."""
    return build(AJC_VERSION, "ajc")


class AJC:
    """Runs asyncjobs' ``ajc`` against one NATS URL.

    ajc connects only through a NATS CLI context (``--context``, default ``AJC``), so this writes one holding the
    URL into a private ``XDG_CONFIG_HOME`` and points ajc at it. Every ajc command creates what asyncjobs' client
    needs if missing: the task store ``CHORIA_AJ_TASKS``, the ``DEFAULT`` queue, and the KV buckets
    ``CHORIA_AJ_CONFIGURATION`` (schedules) and ``CHORIA_AJ_ELECTIONS`` (scheduler leader election).
    """

    def __init__(self, binary: Path, url: str, tmp: Path) -> None:
        self.binary = binary
        self.url = url
        config = tmp / "ajc-config"
        (config / "nats" / "context").mkdir(parents=True, exist_ok=True)
        (config / "nats" / "context" / "AJC.json").write_text(json.dumps({"url": url}))
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(config), "CONTEXT": "AJC"}
        self.tmp = tmp
        self._n = 0

    async def run(self, *args: str, check: bool = True, within: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``ajc ARGS``; fails the test when it exits non-zero (unless ``check=False``). Output is text."""
        with anyio.fail_after(within):
            result = await anyio.run_process([str(self.binary), *args], env=self.env, check=False)
        done = subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(errors="replace"),
                                           result.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise AssertionError(f"ajc {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    async def schedule(self, name: str) -> dict[str, Any]:
        """The schedule as asyncjobs loads it (``ajc tasks cron view NAME --json``)."""
        result: dict[str, Any] = json.loads((await self.run("tasks", "cron", "view", name, "--json")).stdout)
        return result

    @asynccontextmanager
    async def start(self, *args: str) -> AsyncIterator[Background]:
        """Start a long-running ajc command (e.g. ``tasks cron scheduler NAME``); stopped when the block ends.

        ajc logs to stderr (kept in a file, see ``Background.stderr()``); stdout is rarely used by such commands.
        """
        self._n += 1
        stderr = self.tmp / f"ajc-{self._n}.stderr"
        with stderr.open("wb") as err:
            process = await anyio.open_process([str(self.binary), *args], env=self.env, stderr=err)
        try:
            yield Background(process, stderr)
        finally:
            await _stop(process)


    @asynccontextmanager
    async def scheduler(self, nc: Client, name: str, within: float = 60.0) -> AsyncIterator[Background]:
        """Run asyncjobs' own scheduler (``ajc tasks cron scheduler NAME``) and wait until it leads.

        asyncjobs fires schedules only from the leader of KV bucket ``CHORIA_AJ_ELECTIONS`` (key ``task_scheduler``,
        bucket TTL 10s); a candidate waits 0-5s, wins, and announces the win about 7.5s later with the core NATS
        event ``CHORIA_AJ.E.leader_election.task_scheduler`` — awaited here, so the block starts with a leader.
        A stopped scheduler's key expires 10s later: a second scheduler in the same server waits that long.
        """
        won = anyio.Event()

        async def on_event(msg: Msg) -> None:
            if json.loads(msg.data).get("name") == name:
                won.set()

        sub = await nc.subscribe("CHORIA_AJ.E.leader_election.task_scheduler", cb=on_event)
        try:
            async with self.start("tasks", "cron", "scheduler", name) as process:
                with anyio.fail_after(within):
                    await won.wait()
                yield process
        finally:
            await sub.unsubscribe()


@pytest.fixture
def ajc(ajc_bin: Path, nats_server: NatsServer, tmp_path: Path) -> AJC:
    return AJC(ajc_bin, nats_server.url, tmp_path)
