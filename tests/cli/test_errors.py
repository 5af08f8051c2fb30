"""The CLI's error paths: every user mistake, a missing server and a timeout end in one clear line, never a traceback.

Each case runs the real ``jetbridge`` command and checks its exit code (bridge/cli_common.py lists them) and words.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import jetbridge
import nats
import pytest
from nats.aio.client import Client

from bridge.embedded import NatsServer
from bridge.settings import Settings
from tests.cli.docblocks import BIN, clean_env
from tests.harness import running_dispatcher

pytestmark = pytest.mark.anyio
JETBRIDGE = str(BIN / "jetbridge")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


async def jb(*args: str, cwd: Path, within: float = 60) -> Run:
    with anyio.fail_after(within):
        done = await anyio.run_process([JETBRIDGE, *args], cwd=cwd, env=clean_env(COLUMNS="200"), check=False)
    run = Run(done.returncode, done.stdout.decode(), done.stderr.decode())
    assert "Traceback" not in run.stdout + run.stderr, run.output
    return run


@pytest.fixture
async def fresh(own_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(own_server.url)
    yield nc
    await nc.close()


@pytest.mark.parametrize("args", [
    ["info"], ["task", "list"], ["enqueue", "t"], ["queue", "list"], ["task", "get", "x"], ["watch", "--seconds", "1"],
])
async def test_no_server_says_how_to_start_one(tmp_path: Path, args: list[str]) -> None:
    run = await jb(*args, cwd=tmp_path)
    assert run.code == 3 and "no jetbridge server runs for data dir" in run.stderr, run.output
    assert "jetbridge run --background" in run.stderr and not (tmp_path / ".jetbridge" / "jetstream").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["enqueue", "a\nb"], "task type 'a\\nb' is invalid"),
    (["enqueue", "t", "--queue", "Q\n"], "--queue 'Q\\n' is invalid"),
    (["enqueue", "t", "--id", "x\n"], "--id 'x\\n' is invalid"),
    (["enqueue", "t", "--deadline", "100000000000h"], "is too long"),
    (["enqueue", "t", "--deadline", "0s"], "--deadline must be more than 0s"),
    (["enqueue", "t", "--deadline", "soon"], "is not a duration"),
    (["enqueue", "t", "--tries", str(2**63)], "--tries must be from 0"),
    (["enqueue", "t", "{not json"], "payload is not JSON"),
    (["task", "list", "--state", "finished"], "unknown state 'finished'"),
    (["task", "list", "--since", "yesterday"], "is not a duration"),
    (["--server", "nats://127.0.0.1:1", "info"], "cannot connect to NATS"),
    (["info", "--server", "nats://127.0.0.1:1"], "cannot connect to NATS"),  # global options after the command
    (["run", "--queue", "a.b"], "not a valid queue name"),
    (["run", "--hook", "no way"], "hooks: 'no way' is not an entry point name"),
    (["run", "--server", "nats://127.0.0.1:1"], "cannot connect to NATS at nats://127.0.0.1:1"),  # `run --server`
    (["--config", "/nonexistent.toml", "info"], "does not exist"),
])
async def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], words: str) -> None:
    run = await jb(*args, cwd=tmp_path)
    assert run.code == 2 and words in " ".join(run.stderr.replace("│", " ").split()), run.output


async def test_a_fresh_server_answers_without_errors(own_server: NatsServer, tmp_path: Path) -> None:
    url = own_server.url
    info = await jb("info", "--server", url, cwd=tmp_path)
    assert info.code == 0 and "task store CHORIA_AJ_TASKS: not created yet" in info.stdout, info.output
    assert "none online" in info.stdout, info.output
    listed = await jb("task", "list", "--server", url, cwd=tmp_path)
    assert listed.code == 0 and "no tasks yet" in listed.stderr, listed.output
    for args, words in ((["task", "get", "nope"], "task nope not found"),
                        (["queue", "info", "NOPE"], "queue NOPE does not exist"),
                        (["enqueue", "t", "--queue", "NOPE"], "does not exist"),
                        (["queue", "purge", "NOPE", "--force"], "queue NOPE does not exist"),
                        (["queue", "add", "a.b"], "is invalid"),
                        (["task", "watch", "nope"], "task nope not found"),
                        (["task", "retry", "nope"], "task nope not found")):
        run = await jb(*args, "--server", url, cwd=tmp_path)
        assert run.code == 2 and words in run.stderr, run.output


async def test_wait_timeout_prints_the_id_state_and_reason(own_server: NatsServer, fresh: Client, tmp_path: Path) -> None:
    url = own_server.url
    assert (await jb("queue", "add", "WQ", "--server", url, cwd=tmp_path)).code == 0
    run = await jb("enqueue", "t", "--queue", "WQ", "--wait", "1s", "--server", url, cwd=tmp_path)
    assert run.code == 4 and len(run.stdout.strip()) == 27, run.output  # the id, on stdout
    assert f"task {run.stdout.strip()} did not finish within 1s: it is new: no dispatcher is online" in run.stderr
    settings = Settings(queues=("WQ",), no_handler_delay=0.2, create_queues=False, subject_prefix="jb.errors")
    async with running_dispatcher(fresh, settings):
        run = await jb("enqueue", "t", "--queue", "WQ", "--wait", "2", "--server", url, cwd=tmp_path)
        assert run.code == 4 and "no handler is online for type t" in " ".join(run.stderr.split()), run.output
        run = await jb("enqueue", "t", "--queue", "OTHER", "--wait", "1", "--server", url, cwd=tmp_path)
        assert run.code == 2, run.output  # OTHER does not exist: said at once, no wait


async def test_cancel_of_a_finished_task_says_so(own_server: NatsServer, tmp_path: Path) -> None:
    url = own_server.url
    await jb("queue", "add", "CQ", "--server", url, cwd=tmp_path)
    task_id = (await jb("enqueue", "t", "--queue", "CQ", "--server", url, cwd=tmp_path)).stdout.strip()
    first = await jb("task", "cancel", task_id, "--server", url, cwd=tmp_path)
    assert first.code == 0 and "terminated" in first.stdout, first.output
    again = await jb("task", "cancel", task_id, "--server", url, cwd=tmp_path)
    assert again.code == 1 and f"task {task_id} had already finished (terminated)" in again.stderr, again.output
    listed = await jb("task", "list", "--state", "terminated", "--queue", "CQ", "--type", "t", "--since", "1h",
                      "--server", url, cwd=tmp_path)
    assert task_id in listed.stdout, listed.output  # ids are never cut
    none = await jb("task", "list", "--type", "other", "--server", url, cwd=tmp_path)
    assert task_id not in none.stdout


async def test_a_wildcard_task_id_names_no_task_and_deletes_nothing(own_server: NatsServer, fresh: Client,
                                                                   tmp_path: Path) -> None:
    """``>``, ``*`` or a dotted id in a task command would be a subject wildcard: a purge of every task."""
    url = own_server.url
    await jb("queue", "add", "DQ", "--server", url, cwd=tmp_path)
    ids = [(await jb("enqueue", "t", "--queue", "DQ", "--server", url, cwd=tmp_path)).stdout.strip() for _ in range(3)]
    for bad in (">", "*", f"{ids[0]}.>", "a.b"):
        for command in ("delete", "get", "cancel", "retry"):
            run = await jb("task", command, bad, "--server", url, cwd=tmp_path)
            assert run.code == 2 and "no task has the id" in " ".join(run.stderr.split()), run.output
        with pytest.raises(jetbridge.TaskNotFoundError):
            await jetbridge.Producer(fresh, queue="DQ").delete(bad)
    for task_id in ids:  # all still there
        assert (await jb("task", "get", task_id, "--server", url, cwd=tmp_path)).code == 0
