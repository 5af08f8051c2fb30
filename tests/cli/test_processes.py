"""``jetbridge run --processes N``: N dispatcher processes, each with its own pull, drain one queue together."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge._producer import TaskSpec
from nats.aio.client import Client

from bridge.embedded import NatsServer
from bridge.processes import child_argv, metrics_for
from tests.harness import Harness

pytestmark = pytest.mark.anyio


def test_a_child_is_a_plain_run() -> None:
    assert child_argv(["--server", "u", "run", "-q", "A", "--processes", "4", "--ready-fd", "7"]) == \
        ["--server", "u", "run", "-q", "A"]
    assert child_argv(["run", "--processes=2", "--concurrency", "5"]) == ["run", "--concurrency", "5"]
    assert metrics_for("127.0.0.1:9100", 2) == "127.0.0.1:9102"
    assert metrics_for("127.0.0.1:0", 3) == "127.0.0.1:0" and metrics_for("", 1) == ""


def test_a_bad_process_count_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "bridge", "--server", "nats://127.0.0.1:1", "run", "--processes", "0"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0
    assert "--processes must be between 1 and" in out.stderr and "Traceback" not in out.stderr


def _supervisor(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """``jetbridge <argv>`` started with a pipe it writes ``ready`` to once every process serves."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "bridge", *argv, "--ready-fd", str(write_fd)], env=env,
                            pass_fds=(write_fd,), stdin=subprocess.DEVNULL, start_new_session=True)
    os.close(write_fd)
    return proc, read_fd


async def test_two_processes_drain_a_queue_with_no_duplicates(
    nats_server: NatsServer, nc: Client, unique: str, tmp_path: Path,
) -> None:
    h = Harness(nc, unique)
    await h.make_queue()
    calls: collections.Counter[str] = collections.Counter()

    async def work(task: jetbridge.Task) -> Any:
        calls[task.id] += 1
        await anyio.sleep(0.005)
        return task.id

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("JETBRIDGE_")},
           "JETBRIDGE_SUBJECT_PREFIX": h.prefix, "JETBRIDGE_CREATE_QUEUES": "false",
           "JETBRIDGE_FIRE_SCHEDULES": "false", "JETBRIDGE_DATA_DIR": str(tmp_path / "data"),
           "JETBRIDGE_DISPATCHER_ID": f"mp{unique}"}
    proc, read_fd = _supervisor(
        ["--server", nats_server.url, "run", "--queue", h.queue, "--processes", "2", "--concurrency", "10",
         "--log-format", "json"], env)
    try:
        with os.fdopen(read_fd, "rb") as ready:
            line = await anyio.to_thread.run_sync(ready.readline)
        assert line.startswith(b"ready"), "the supervisor did not report every process ready"
        async with h.service({"work": work}, concurrency=50):
            ids = await h.producer.enqueue_many([TaskSpec(type="work") for _ in range(300)])
            with anyio.fail_after(120):
                records = [await h.producer.wait(str(task_id)) for task_id in ids]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(proc.wait, 60)
    assert code == 0
    assert [r.state for r in records] == ["complete"] * 300
    assert len(calls) == 300 and set(calls.values()) == {1}, "a task ran more than once"
    assert all(r.tries == 1 for r in records)
    ran_on = {r.history.attempts[-1].dispatcher for r in records if r.history}
    assert ran_on == {f"mp{unique}-0", f"mp{unique}-1"}, "both processes take work"
