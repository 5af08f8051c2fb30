"""``jetbridge handle`` as a real process: the CLI, ``ready``, SIGTERM drain; and the shell conformance handler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from nats.aio.client import Client

from bridge.embedded import NatsServer
from tests.handle.conftest import Events
from tests.harness import Harness

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
JETBRIDGE = str(Path(sys.executable).parent / "jetbridge")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JETBRIDGE_") and k != "NATS_URL"}
    return {**env, **extra}


@asynccontextmanager
async def started(command: list[str], env: dict[str, str]) -> AsyncIterator[tuple[Process, list[str]]]:
    """Start ``command``, wait for its ``ready`` line; on exit, make sure it is gone."""
    proc = await anyio.open_process(command, env=env, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    lines: list[str] = []
    reader = BufferedByteReceiveStream(proc.stdout)
    with anyio.fail_after(20):
        while (line := (await reader.receive_until(b"\n", 1024)).decode()) != "ready":
            lines.append(line)
    lines.append("ready")
    try:
        yield proc, lines
    finally:
        if proc.returncode is None:
            proc.kill()
        with anyio.CancelScope(shield=True):
            await proc.wait()
        await proc.aclose()


async def test_usage_errors_are_clear() -> None:
    no_command = await anyio.run_process([JETBRIDGE, "handle", "x"], check=False, env=clean_env())
    assert no_command.returncode == 2 and b"put the command to run after --" in no_command.stderr
    missing = await anyio.run_process([JETBRIDGE, "handle", "x", "--", "/nonexistent/prog"], check=False,
                                      env=clean_env())
    assert missing.returncode == 2 and b"'/nonexistent/prog' not found or not executable" in missing.stderr


async def test_jetbridge_handle_process_serves_then_drains_on_sigterm(
    h: Harness, nats_server: NatsServer, script: Any, events: Events, tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    job = script("""
echo "publish $EVENTS start $JETBRIDGE_TASK_ID $*" >&3
while [ ! -e "$RELEASE" ]; do sleep 0.02; done
printf '{"args": "%s", "payload": %s}' "$*" "$(cat)"
""")
    command = [JETBRIDGE, "--server", nats_server.url, "handle", "gate", "--prefix", h.prefix, "--concurrency", "2",
               "--grace", "20s", "--name", f"cli-{h.unique}", "--", str(job), "--flag", "two words"]
    env = clean_env(RELEASE=str(release), EVENTS=events.subject)
    async with h.dispatcher(), started(command, env) as (proc, lines):
        info = json.loads((await h.nc.request(f"$SRV.INFO.cli-{h.unique}", b"", timeout=5)).data)
        task_id = await h.producer.enqueue("gate", {"x": 1})
        await events.wait_for(lambda t: t.startswith(f"start {task_id}"))
        proc.send_signal(signal.SIGTERM)  # drain: the running command may finish
        release.touch()
        record = await h.producer.wait(task_id, timeout=10)
        with anyio.fail_after(10):
            assert await proc.wait() == 0
    assert lines == ["ready"]
    assert info["metadata"]["jetbridge.sdk"].startswith("shell/") and info["metadata"]["jetbridge.protocols"] == "1,1.1"
    assert [e["subject"] for e in info["endpoints"]] == [f"{h.prefix}.gate"]
    assert record.state == "complete"
    assert record.result is not None and record.result.value() == {"args": "--flag two words", "payload": {"x": 1}}


async def test_a_command_can_run_jetbridge_itself(h: Harness, nats_server: NatsServer, script: Any) -> None:
    job = script(f'exec {JETBRIDGE} --server {nats_server.url} enqueue follow-up \'{{"n": 1}}\' --queue {h.queue}')
    from tests.handle.conftest import serving

    async with h.dispatcher(), serving(h, ["spawn"], [job], env={}):
        record = await h.run("spawn", max_tries=1)
    assert record.state == "complete", record.last_err


# The shell conformance handler (interop/shell/conformance.sh) --------------------------------------------------


async def test_the_shell_conformance_handler(nc: Client, unique: str, nats_server: NatsServer) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=0.6)
    events = Events("jetbridge.conformance.events")
    sub = await nc.subscribe(events.subject, cb=events.on_msg)
    env = clean_env(NATS_URL=nats_server.url, JETBRIDGE_SUBJECT_PREFIX=h.prefix, JETBRIDGE_INSTANCE=f"sh-{unique}",
                    JETBRIDGE_CONCURRENCY="8")
    async with h.dispatcher(), started([str(REPO / "interop/shell/conformance.sh")], env) as (proc, _):
        echo = await h.run("conf:echo", {"a": [1, "b"]})
        echo_bin = await h.run("conf:echo", jetbridge.Bytes(b"\x00\xffabc\n", "image/png"))
        info = await h.run("conf:info", None, max_tries=4)
        fail_then_ok = await h.run("conf:fail", {"times": 2})
        fail_always = await h.run("conf:fail", {"times": 5}, max_tries=2)
        retry_after = await h.run("conf:retry_after", {"ms": 300})
        terminate = await h.run("conf:terminate", {"message": 'no "way"'})
        slept = await h.run("conf:sleep", {"ms": 900, "steps": 3})
        other_attempt = await h.run("conf:sleep", {"ms": 60000, "only_attempt": 2})
        big = await h.run("conf:big", {"bytes": 5})
        too_big = await h.run("conf:big", {"bytes": 2_000_000})
        panic = await h.run("conf:panic", max_tries=1)

        cancel_id = await h.producer.enqueue("conf:sleep", {"ms": 30000, "steps": 30})
        await events.wait_for(lambda t: json.loads(t) == {**json.loads(t), "event": "started", "task_id": cancel_id})
        await h.producer.cancel(cancel_id)
        await events.wait_for(lambda t: json.loads(t) == {**json.loads(t), "event": "cancelled", "task_id": cancel_id})
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await proc.wait() == 0
    await sub.unsubscribe()
    seen = [json.loads(t) for t in events.texts()]

    def value(record: jetbridge.TaskRecord) -> Any:
        return record.result.value() if record.result is not None else None

    assert value(echo) == {"a": [1, "b"]} and value(echo_bin) == jetbridge.Bytes(b"\x00\xffabc\n", "image/png")
    assert value(info) == {"instance": f"sh-{unique}", "lang": "shell", "task_id": info.id, "attempt": 1,
                           "max_attempts": 4, "queue": h.queue, "budget_ms": value(info)["budget_ms"]}
    assert 9000 < value(info)["budget_ms"] <= 10000
    assert (value(fail_then_ok), fail_then_ok.tries) == ({"attempt": 3}, 3)
    assert (fail_always.state, fail_always.last_err_code, fail_always.last_err) == (
        "expired", "planned_failure", "gave up after 2 of 2 attempts: failure 2 of 5")
    assert value(retry_after) == {"attempt": 2}
    assert (terminate.state, terminate.last_err_code, terminate.last_err) == (
        "terminated", "planned_terminate", 'no "way"')
    assert (value(slept), slept.tries) == ({"slept_ms": 900, "attempt": 1}, 1)
    assert value(other_attempt) == {"slept_ms": 0, "attempt": 1}
    assert value(big) == jetbridge.Bytes(b"aaaaa", "application/octet-stream")
    assert (too_big.state, too_big.last_err_code) == ("terminated", "result_too_large")
    assert (panic.state, panic.last_err_code) == ("expired", "exit_70")
    cancelled = [e for e in seen if e["event"] == "cancelled"]
    assert cancelled == [{"event": "cancelled", "task_id": cancel_id, "attempt": 1, "instance": f"sh-{unique}",
                          "reason": "operator"}]
    started_ids = {e["task_id"] for e in seen if e["event"] == "started"}
    assert {echo.id, info.id, panic.id, slept.id} <= started_ids
    assert all(e["instance"] == f"sh-{unique}" for e in seen)
