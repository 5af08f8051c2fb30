"""Bulk operations on 50,000 tasks through the CLI: count first, then act on exactly the matching tasks."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge._producer import TaskSpec, ids_of

from bridge.embedded import NatsServer
from bridge.index import Query, TaskIndex

pytestmark = pytest.mark.anyio
N = 50_000


def cli(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "--server", url, *args], capture_output=True, text=True,
                          input=stdin, timeout=600)


async def _counts(nc: Any, queue: str) -> dict[str, int]:
    index = TaskIndex()
    async with anyio.create_task_group() as tg:
        tg.start_soon(index.follow, nc)
        await index.caught_up.wait()
        tg.cancel_scope.cancel()
    return {s: index.count(Query(states=frozenset({s}), queue=queue)) for s in ("new", "terminated")}


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_bulk_cancel_and_delete_50000_tasks(h: Any, nats_server: NatsServer) -> None:
    other = jetbridge.Producer(h.nc, queue=h.queue)
    results = await other.enqueue_many([TaskSpec(type=f"{h.unique}:a" if i % 2 else f"{h.unique}:b", payload=i)
                                        for i in range(N)], chunk=1000)
    assert len(ids_of(results)) == N
    url = nats_server.url
    asked = await anyio.to_thread.run_sync(lambda: cli(url, "bulk", "cancel", "--queue", h.queue,
                                                       "--type", f"{h.unique}:a", "--state", "new", stdin="n\n"))
    assert f"{N // 2} tasks match" in asked.stdout and asked.returncode == 1  # answered no: nothing changed
    assert await _counts(h.nc, h.queue) == {"new": N, "terminated": 0}
    started = time.monotonic()
    done = await anyio.to_thread.run_sync(lambda: cli(url, "bulk", "cancel", "--queue", h.queue,
                                                      "--type", f"{h.unique}:a", "--state", "new", "--yes"))
    assert done.returncode == 0, done.stderr
    assert f"cancel: {N // 2} done, 0 skipped" in done.stdout
    print(f"cancelled {N // 2} tasks in {time.monotonic() - started:.1f}s")
    assert await _counts(h.nc, h.queue) == {"new": N // 2, "terminated": N // 2}
    gone = await anyio.to_thread.run_sync(lambda: cli(url, "bulk", "delete", "--queue", h.queue, "--yes"))
    assert gone.returncode == 0, gone.stderr
    assert f"delete: {N} done" in gone.stdout
    assert await _counts(h.nc, h.queue) == {"new": 0, "terminated": 0}
    nothing = await anyio.to_thread.run_sync(lambda: cli(url, "bulk", "retry", "--yes"))
    assert nothing.returncode != 0 and "say which tasks to retry" in nothing.stderr
    await other.close()
