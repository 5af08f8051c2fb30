"""Fixtures for ``jetbridge handle``: shell scripts in tmp_path, the handler in-process, events from the scripts."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge import _names as names
from nats.aio.client import Client
from nats.aio.msg import Msg

from bridge.handle import CommandHandler, HandleConfig
from tests.harness import Harness


@pytest.fixture
async def h(nc: Client, unique: str) -> Harness:
    harness = Harness(nc, unique)
    await harness.make_queue()
    return harness


@pytest.fixture
def script(tmp_path: Path) -> Callable[..., Path]:
    """``script(body)`` writes an executable /bin/sh script and returns its path."""
    count = 0

    def write(body: str, *, shell: str = "/bin/sh") -> Path:
        nonlocal count
        count += 1
        path = tmp_path / f"job{count}.sh"
        path.write_text(f"#!{shell}\n{body.strip()}\n")
        path.chmod(0o755)
        return path

    return write


class Events:
    """Messages the scripts publish with ``publish $EVENTS ...`` on fd 3, with their arrival times."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.items: list[tuple[float, str]] = []
        self._arrived = anyio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.items.append((anyio.current_time(), msg.data.decode()))
        self._arrived.set()
        self._arrived = anyio.Event()

    async def wait_for(self, pred: Callable[[str], bool], *, within: float = 10.0) -> tuple[float, str]:
        """The first event (arrived or arriving) for which ``pred`` is true."""
        with anyio.fail_after(within):
            seen = 0
            while True:
                for item in self.items[seen:]:
                    if pred(item[1]):
                        return item
                seen = len(self.items)
                await self._arrived.wait()

    def texts(self) -> list[str]:
        return [text for _, text in self.items]

    async def pids(self, task_id: str | None = None) -> list[int]:
        """Waits for ``pids <pid>...`` and returns them."""
        _, text = await self.wait_for(lambda t: t.startswith("pids "))
        return [int(p) for p in text.split()[1:]]


@pytest.fixture
async def events(nc: Client, unique: str) -> AsyncIterator[Events]:
    ev = Events(f"test.{unique}.events")
    sub = await nc.subscribe(ev.subject, cb=ev.on_msg)
    yield ev
    await sub.unsubscribe()


@asynccontextmanager
async def serving(h: Harness, types: list[str], command: list[Any], **options: Any) -> AsyncIterator[CommandHandler]:
    """``jetbridge handle`` in-process: CommandHandler running until the block ends (then stopped at once)."""
    env = {"EVENTS": f"test.{h.unique}.events", **options.pop("env", {})}
    opts: dict[str, Any] = {"grace": 5.0, "kill_grace": 1.0, "concurrency": 4, **options}
    config = HandleConfig(command=tuple(str(c) for c in command), task_types=tuple(types), prefix=h.prefix,
                          name=f"handle-{h.unique}", env=env, **opts)
    handler = CommandHandler(h.nc, config)
    async with anyio.create_task_group() as tg:
        await tg.start(handler.run)
        try:
            yield handler
        finally:
            handler.stop(now=True)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper we do not control counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def reaped(pid: int) -> bool:
    """Whether our child ``pid`` has been waited for (no zombie left behind by us)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


async def wait_gone(*pids: int, within: float = 5.0) -> None:
    """Wait until every process in ``pids`` has exited: a pidfd becomes readable when its process ends."""
    with anyio.fail_after(within):
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                await anyio.wait_readable(fd)
            finally:
                os.close(fd)
    assert not any(alive(p) for p in pids)


async def wait_state(h: Harness, task_id: str, *states: str, within: float = 10.0) -> jetbridge.TaskRecord:
    """The task once it is in one of ``states``, awaited through its lifecycle events."""
    changed = anyio.Event()

    async def on_event(msg: Msg) -> None:
        changed.set()

    sub = await h.nc.subscribe(names.task_state_event_subject(task_id), cb=on_event)
    try:
        with anyio.fail_after(within):
            while (record := await h.producer.get(task_id)).state not in states:
                await changed.wait()
                changed = anyio.Event()
        return record
    finally:
        await sub.unsubscribe()


def parse(text: str) -> Any:
    return json.loads(text)
