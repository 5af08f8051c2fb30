"""asyncjobs v0.3.0's ``ajc tasks cron`` and scheduler against a Jetbridge deployment: the storage they share.

These pin down the format docs/asyncjobs.md describes (*Schedules*) for Jetbridge's scheduler to follow: the KV
document ``ajc tasks cron add`` writes, that ajc lists and reads a document written by another program in that
format, and what asyncjobs' own scheduler enqueues when it fires (run here by a Jetbridge dispatcher).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge._timeutil import NS, format_ns, now_ns, parse_ns
from nats.aio.client import Client
from nats.js.kv import KeyValue

from tests.asyncjobs.conftest import AJC
from tests.harness import Harness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

BUCKET = "CHORIA_AJ_CONFIGURATION"
KSUID = re.compile(r"[0-9A-Za-z]{27}")


@pytest.fixture
def h(nc: Client, unique: str) -> Harness:
    return Harness(nc, unique)


@pytest.fixture
async def schedules(ajc: AJC, nc: Client) -> AsyncIterator[KeyValue]:
    """The schedules bucket (ajc creates it on first use); schedules a test leaves are deleted afterwards, so that
    a later asyncjobs scheduler in the same server does not fire them."""
    await ajc.run("tasks", "cron", "list", "--names")
    kv = await nc.jetstream().key_value(BUCKET)
    before = set(await _names(kv))
    yield kv
    for key in set(await _names(kv)) - before:
        await kv.delete(key)


async def _names(kv: KeyValue) -> list[str]:
    try:
        return [key for key in await kv.keys() if key.startswith("scheduled_tasks.")]
    except Exception as error:  # nats-py raises NoKeysError for an empty bucket
        if type(error).__name__ == "NoKeysError":
            return []
        raise


async def test_ajc_cron_add_writes_this_document(ajc: AJC, schedules: KeyValue, unique: str) -> None:
    name = f"s{unique}"
    before = now_ns()
    await ajc.run("tasks", "cron", "add", name, "every 1h", "email:new", "--queue", "EMAIL",
                  "--payload", '{"to":"ada"}', "--deadline", "2m", "--tries", "3")
    entry = await schedules.get(f"scheduled_tasks.{name}")
    assert entry.value is not None
    doc: dict[str, Any] = json.loads(entry.value)
    assert list(doc) == ["name", "schedule", "queue", "task_type", "payload", "deadline", "max_tries", "created_at"]
    assert (doc["name"], doc["schedule"], doc["queue"], doc["task_type"]) == (name, "@every 1h", "EMAIL", "email:new")
    # ajc JSON-encodes --payload as a Go string: the stored bytes are a JSON string literal, quotes included
    assert base64.b64decode(doc["payload"]) == b'"{\\"to\\":\\"ada\\"}"'
    assert (doc["deadline"], doc["max_tries"]) == (120 * NS, 3)
    assert before <= parse_ns(doc["created_at"]) <= now_ns() and doc["created_at"].endswith("Z")

    bare = f"b{unique}"
    await ajc.run("tasks", "cron", "add", bare, "*/5 * * * *", "email:new")
    doc = json.loads((await schedules.get(f"scheduled_tasks.{bare}")).value or b"")
    assert list(doc) == ["name", "schedule", "queue", "task_type", "payload", "max_tries", "created_at"]
    assert (doc["schedule"], doc["queue"], doc["payload"], doc["max_tries"]) == ("*/5 * * * *", "DEFAULT", None, 10)

    refused = await ajc.run("tasks", "cron", "add", f"x{unique}", "every 1h", "t", "--deadline", "10s", check=False)
    assert refused.returncode == 1 and "deadline" in refused.stderr.lower()
    duplicate = await ajc.run("tasks", "cron", "add", bare, "daily", "email:new", check=False)
    assert duplicate.returncode == 1 and "already exist" in duplicate.stderr
    # ajc's argument parser reads "@name" arguments as files: descriptors are written without the "@"
    at_sign = await ajc.run("tasks", "cron", "add", f"a{unique}", "@daily", "email:new", check=False)
    assert at_sign.returncode == 1 and 'failed to open arguments file "daily"' in at_sign.stderr


async def test_ajc_lists_and_reads_a_schedule_another_program_wrote(
    ajc: AJC, schedules: KeyValue, unique: str,
) -> None:
    """A document written in asyncjobs' format, with extra members of its own, is listed and read by ajc."""
    name = f"j{unique}"
    doc = {
        "name": name, "schedule": "30 2 * * 1-5", "queue": "REPORTS", "task_type": "report:daily",
        "payload": base64.b64encode(b'{"region":"eu"}').decode(), "deadline": 45 * NS, "max_tries": 2,
        "created_at": format_ns(now_ns()), "overlap": "skip", "note": "ignored by asyncjobs",
    }
    await schedules.create(f"scheduled_tasks.{name}", json.dumps(doc).encode())

    assert name in (await ajc.run("tasks", "cron", "list", "--names")).stdout.split()
    table = (await ajc.run("tasks", "cron", "list")).stdout
    assert name in table and "30 2 * * 1-5" in table and "report:daily" in table
    assert await ajc.schedule(name) == {key: doc[key] for key in list(doc)[:8]}
    view = (await ajc.run("tasks", "cron", "view", name)).stdout
    assert "Scheduling Deadline: 45.00s" in view and "Maximum Tries: 2" in view

    await ajc.run("tasks", "cron", "delete", name, "--force")
    assert name not in (await ajc.run("tasks", "cron", "list", "--names")).stdout.split()


async def test_asyncjobs_scheduler_fires_into_a_jetbridge_queue(
    h: Harness, ajc: AJC, schedules: KeyValue, nc: Client,
) -> None:
    """asyncjobs' own scheduler (leader-elected) enqueues a task each second; a Jetbridge dispatcher runs it. The
    payload arrives encoded a second time (a base64 JSON string of the stored bytes): asyncjobs' scheduler
    JSON-marshals the []byte payload. The task is unsigned and has the schedule's tries and deadline offset."""
    await h.make_queue()
    got: list[jetbridge.Task] = []
    fired = anyio.Event()

    async def record(task: jetbridge.Task) -> Any:
        # asyncjobs' scheduler names its tasks with a bare KSUID; tasks a Jetbridge scheduler may fire from the same
        # schedule (every dispatcher fires schedules) have other ids and are not what this test looks at
        if KSUID.fullmatch(task.id):
            got.append(task)
            fired.set()
        return "ok"

    name = f"f{h.unique}"
    await ajc.run("tasks", "cron", "add", name, "every 1s", "cron:t", "--queue", h.queue,
                  "--payload", "hello", "--deadline", "1m", "--tries", "4")
    stored = base64.b64decode(json.loads((await schedules.get(f"scheduled_tasks.{name}")).value or b"")["payload"])
    assert stored == b'"hello"'
    async with h.dispatcher(), h.service({"cron:t": record}), ajc.scheduler(nc, f"sched-{h.unique}"):
        with anyio.fail_after(30):
            await fired.wait()
        await ajc.run("tasks", "cron", "delete", name, "--force")

    task = got[0]
    assert task.payload == base64.b64encode(stored).decode(), "asyncjobs' scheduler encodes the payload twice"
    record_ = await h.producer.get(task.id)
    assert (record_.queue, record_.max_tries, record_.signature) == (h.queue, 4, "")
    deadline = record_.deadline_ns
    assert deadline is not None and 55 * NS <= deadline - record_.created_ns <= 61 * NS
