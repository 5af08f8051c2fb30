"""Proven compatibility with choria asyncjobs: the real Go module (through ajcompat) and Jetbridge on one server.

Each test mixes the two sides on shared streams: tasks enqueued by asyncjobs run on the Jetbridge dispatcher,
tasks enqueued by Jetbridge run on an asyncjobs processor, an asyncjobs-style request-reply handler serves the
dispatcher's compatibility mode, and asyncjobs parses Jetbridge's lifecycle events (signatures:
test_asyncjobs_signing.py). Every test runs once per asyncjobs release (ids end in [v0.1.2] / [v0.3.0]).
docs/asyncjobs.md lists the deliberate differences these tests pin down.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jetbridge
import pytest
from nats.aio.client import Client

from bridge.routes import Route
from tests.asyncjobs.conftest import AJ
from tests.harness import Harness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

NS = 1_000_000_000


@pytest.fixture
def h(nc: Client, unique: str) -> Harness:
    return Harness(nc, unique)


async def echo(task: jetbridge.Task) -> Any:
    return {"got": task.payload, "attempt": task.attempt, "queue": task.queue}


# asyncjobs producer -> Jetbridge dispatcher -----------------------------------------------------------------------


async def test_asyncjobs_task_on_an_asyncjobs_queue_runs_on_jetbridge(h: Harness, aj: AJ) -> None:
    queue = await aj.json("new-queue", "--queue", h.queue, "--run-time", "10s")
    assert (queue["max_tries"], queue["max_runtime"], queue["max_concurrent"]) == (-1, 10 * NS, 100)
    config = await h.admin.get(h.queue)
    assert config.asyncjobs_native and (config.max_tries, config.max_run_time, config.lease) == (-1, 10.0, 10.0)

    task_id = await aj.enqueue(h.queue, "aj:echo", {"n": 1})
    async with h.dispatcher(), h.service({"aj:echo": echo}):
        await h.producer.wait(task_id, timeout=20)

    doc = await aj.get(task_id)
    assert (doc["state"], doc["tries"], doc["queue"], doc["type"]) == ("complete", 1, h.queue, "aj:echo")
    assert doc["result"]["payload"] == {"got": {"n": 1}, "attempt": 1, "queue": h.queue}
    assert "last_err" not in doc and doc["max_tries"] == 10
    info = await h.admin.info(h.queue)
    assert (info.waiting, info.in_flight) == (0, 0)


async def test_asyncjobs_task_retried_by_jetbridge_completes(h: Harness, aj: AJ) -> None:
    await h.make_queue()

    async def flaky(task: jetbridge.Task) -> Any:
        if task.attempt == 1:
            raise jetbridge.Retry("first try fails", code="planned", after=1.0)  # a schedule in JETBRIDGE_SCHEDULES
        if task.attempt == 2:
            raise jetbridge.Retry("second try fails", code="planned")  # a short NAK
        return {"attempt": task.attempt}

    task_id = await aj.enqueue(h.queue, "aj:flaky", "x", "--tries", "5")
    async with h.dispatcher(), h.service({"aj:flaky": flaky}):
        await h.producer.wait(task_id, timeout=30)

    doc = await aj.get(task_id)
    assert (doc["state"], doc["tries"], doc["max_tries"]) == ("complete", 3, 5)
    assert doc["result"]["payload"] == {"attempt": 3} and "last_err" not in doc


async def test_asyncjobs_task_out_of_tries_expires_on_jetbridge(h: Harness, aj: AJ) -> None:
    await h.make_queue()

    async def always(task: jetbridge.Task) -> Any:
        raise jetbridge.Retry(f"try {task.attempt} fails", code="planned")

    task_id = await aj.enqueue(h.queue, "aj:bad", None, "--tries", "2")
    async with h.dispatcher(), h.service({"aj:bad": always}):
        await h.producer.wait(task_id, timeout=20)

    doc = await aj.get(task_id)
    assert (doc["state"], doc["tries"]) == ("expired", 2)
    assert doc["last_err"] == "gave up after 2 of 2 attempts: try 2 fails"
    assert (await h.admin.info(h.queue)).waiting == 0


async def test_asyncjobs_task_terminated_by_jetbridge(h: Harness, aj: AJ) -> None:
    await h.make_queue()

    async def refuse(task: jetbridge.Task) -> Any:
        raise jetbridge.Terminate("bad input", code="invalid")

    task_id = await aj.enqueue(h.queue, "aj:term", {"n": 2})
    async with h.dispatcher(), h.service({"aj:term": refuse}):
        await h.producer.wait(task_id, timeout=20)

    doc = await aj.get(task_id)
    assert (doc["state"], doc["tries"], doc["last_err"]) == ("terminated", 1, "bad input")
    assert "result" not in doc
    info = await h.admin.info(h.queue)
    assert (info.waiting, info.in_flight) == (0, 0), "a terminal state finalises the work item"


async def test_asyncjobs_retry_of_a_task_jetbridge_terminated(h: Harness, aj: AJ) -> None:
    """asyncjobs' RetryTaskByID (ajc tasks retry) puts a finished task back; the dispatcher runs it again."""
    await h.make_queue()

    async def second_time_lucky(task: jetbridge.Task) -> Any:
        if task.attempt == 1:
            raise jetbridge.Terminate("not yet")
        return "second time lucky"

    task_id = await aj.enqueue(h.queue, "aj:again", 1)
    async with h.dispatcher(), h.service({"aj:again": second_time_lucky}):
        assert (await h.producer.wait(task_id, timeout=20)).state == "terminated"
        retried = await aj.json("retry", "--queue", h.queue, task_id)
        assert retried["id"] == task_id and retried["state"] in ("retry", "active", "complete")
        record = await h.producer.wait(task_id, timeout=20)
    assert (record.state, record.tries) == ("complete", 2)
    doc = await aj.get(task_id)
    assert (doc["state"], doc["tries"], doc["result"]["payload"]) == ("complete", 2, "second time lucky")


async def test_asyncjobs_dependencies_are_resolved_by_jetbridge(h: Harness, aj: AJ) -> None:
    """A blocked child runs after its parent, with the parent's result; a failed parent makes it unreachable."""
    await h.make_queue()

    async def refuse(task: jetbridge.Task) -> Any:
        raise jetbridge.Terminate("parent refused")

    parent = await aj.enqueue(h.queue, "aj:echo", {"n": 13})
    child = await aj.enqueue(h.queue, "aj:echo", {"n": 14}, "--depends", parent, "--load")
    bad_parent = await aj.enqueue(h.queue, "aj:refuse", None)
    orphan = await aj.enqueue(h.queue, "aj:echo", {"n": 15}, "--depends", bad_parent)
    assert (await aj.get(child))["state"] == (await aj.get(orphan))["state"] == "blocked"

    async with h.dispatcher(), h.service({"aj:echo": echo, "aj:refuse": refuse}):
        for task_id in (parent, child, bad_parent, orphan):
            await h.producer.wait(task_id, timeout=30)

    doc = await aj.get(child)
    assert (doc["state"], doc["tries"], doc["result"]["payload"]["got"]) == ("complete", 1, {"n": 14})
    assert doc["dependency_results"][parent]["payload"] == {"got": {"n": 13}, "attempt": 1, "queue": h.queue}
    doc = await aj.get(orphan)
    assert (doc["state"], doc["tries"]) == ("unreachable", 0)
    assert doc["last_err"] == f"dependency {bad_parent} ended terminated: parent refused"
    info = await h.admin.info(h.queue)
    assert (info.waiting, info.in_flight) == (0, 0)


# Jetbridge producer -> asyncjobs processor ------------------------------------------------------------------------


async def test_jetbridge_queue_as_asyncjobs_sees_it(h: Harness, aj: AJ) -> None:
    await h.make_queue(max_tries=7, max_concurrent=20)
    queue = await aj.json("queue-info", "--queue", h.queue)
    # Jetbridge keeps its limits in consumer metadata; asyncjobs reads MaxDeliver and AckWait.
    assert queue["max_tries"] == -1, "MaxDeliver is -1: Jetbridge counts tries centrally"
    assert queue["max_runtime"] == 2 * NS, "AckWait is Jetbridge's lease (2s here), not max_run_time (10s)"
    assert (queue["max_concurrent"], queue["discard_old"], queue["max_entries"]) == (20, False, -1)


@pytest.mark.parametrize(("mode", "max_tries", "state", "tries", "last_err"), [
    ("ok", 10, "complete", 1, ""),
    ("flaky", 10, "complete", 2, ""),
    ("terminate", 10, "terminated", 1, "planned terminate: terminate task"),
    ("fail", 2, "expired", 2, "planned failure on try 2"),
])
async def test_jetbridge_task_runs_on_an_asyncjobs_worker(
    h: Harness, aj: AJ, mode: str, max_tries: int, state: str, tries: int, last_err: str,
) -> None:
    await h.make_queue()
    task_id = await h.producer.enqueue("go:work", {"x": 1}, max_tries=max_tries)

    async with aj.start("worker", "--queue", h.queue, "--type", "go:work", "--mode", mode, "--count", "1") as worker:
        await worker.ready()
        lines = await worker.objects()

    calls = [line for line in lines if "handled" in line]
    assert calls and calls[0]["handled"] == task_id
    assert (calls[0]["payload"], calls[0]["state"], calls[0]["tries"], calls[0]["queue"]) == ({"x": 1}, "active", 1, h.queue)
    assert calls[0]["max_tries"] == max_tries
    record = await h.producer.get(task_id)
    assert (record.state, record.tries, record.last_err) == (state, tries, last_err)
    if state == "complete":
        assert record.result is not None
        assert record.result.value() == {"handled_by": "asyncjobs", "payload": {"x": 1}, "tries": tries}


async def test_jetbridge_task_on_an_asyncjobs_queue_runs_on_an_asyncjobs_worker(h: Harness, aj: AJ) -> None:
    await aj.json("new-queue", "--queue", h.queue, "--run-time", "30s")
    task_id = await h.producer.enqueue("go:work", [1, 2, 3])
    async with aj.start("worker", "--queue", h.queue, "--type", "go:work", "--count", "1") as worker:
        await worker.ready()
        await worker.objects()
    record = await h.producer.get(task_id)
    assert record.state == "complete" and record.result is not None
    assert record.result.value()["payload"] == [1, 2, 3]


# asyncjobs request-reply handlers in the dispatcher's compatibility mode ------------------------------------------


def _rr_settings(h: Harness) -> dict[str, Any]:
    return {"routes": (Route("rr:*", "CHORIA_AJ.H.T.{type}", mode="asyncjobs"),)}


@pytest.mark.parametrize(("mode", "state", "tries", "last_err"), [
    ("ok", "complete", 1, None),
    ("flaky", "complete", 2, None),
    ("terminate", "terminated", 1, "refused by remote handler: terminate task"),
])
async def test_request_reply_handler_is_served_by_jetbridge(
    h: Harness, aj: AJ, mode: str, state: str, tries: int, last_err: str | None,
) -> None:
    await h.make_queue()
    task_type = f"rr:{h.unique}"
    task_id = await aj.enqueue(h.queue, task_type, {"n": 3})

    async with aj.start("rr-handler", "--type", task_type, "--mode", mode) as handler:
        await handler.ready()
        async with h.dispatcher(**_rr_settings(h)):
            record = await h.producer.wait(task_id, timeout=20)
        request = json.loads(await handler.line())

    assert request["subject"] == f"CHORIA_AJ.H.T.{task_type}"
    assert request["content_type"] == "application/x-asyncjobs-task+json"
    assert "deadline_error" not in request and 6_000 < request["deadline_in_ms"] <= 8_000, request
    assert (request["task_id"], request["state"], request["tries"], request["payload"]) == (task_id, "active", 1, {"n": 3})

    doc = await aj.get(task_id)
    assert (doc["state"], doc["tries"], doc.get("last_err")) == (state, tries, last_err)
    if state == "complete":
        # the reply body is the result, stored as base64 bytes exactly as asyncjobs stores request-reply results
        body = {"remote": True, "task_id": task_id, "tries": tries}
        assert json.loads(base64.b64decode(doc["result"]["payload"])) == body
        assert record.result is not None and json.loads(record.result.value().data) == body


@pytest.mark.parametrize("mode", ["ok", "terminate"])
async def test_request_reply_outcome_matches_asyncjobs_own_processor(h: Harness, aj: AJ, mode: str) -> None:
    """The same handler behind asyncjobs' own request-reply callout and behind Jetbridge: the same task record."""
    await h.make_queue()
    task_type = f"rr:{h.unique}"
    via_jetbridge = await aj.enqueue(h.queue, task_type, {"n": 4})
    async with aj.start("rr-handler", "--type", task_type, "--mode", mode) as handler:
        await handler.ready()
        async with h.dispatcher(**_rr_settings(h)):
            await h.producer.wait(via_jetbridge, timeout=20)
        # asyncjobs' processor gets its own queue: on a Jetbridge queue its run time would be the 2s lease (below)
        aj_queue = f"{h.queue}aj"
        await aj.json("new-queue", "--queue", aj_queue, "--run-time", "10s")
        via_asyncjobs = await aj.enqueue(aj_queue, task_type, {"n": 4})
        async with aj.start("worker", "--queue", aj_queue, "--type", task_type, "--mode", "remote") as worker:
            await worker.ready()
            await worker.objects()

    def shape(doc: dict[str, Any]) -> dict[str, Any]:
        result = doc.get("result")
        if result is not None:
            body = json.loads(base64.b64decode(result["payload"]))
            result = {**body, "task_id": "<id>"}
        return {"state": doc["state"], "tries": doc["tries"], "last_err": doc.get("last_err"), "result": result}

    ours, theirs = shape(await aj.get(via_jetbridge)), shape(await aj.get(via_asyncjobs))
    assert ours == theirs


async def test_catch_all_request_reply_handler(h: Harness, aj: AJ) -> None:
    """Route("*", "CHORIA_AJ.H.T.{type}", mode="asyncjobs") calls asyncjobs' catch-all subject."""
    await h.make_queue()
    task_id = await aj.enqueue(h.queue, f"any:{h.unique}", {"n": 12})
    async with aj.start("rr-handler", "--type", "") as handler:
        await handler.ready()
        async with h.dispatcher(routes=(Route("*", "CHORIA_AJ.H.T.{type}", mode="asyncjobs"),)):
            record = await h.producer.wait(task_id, timeout=20)
        request = json.loads(await handler.line())
    assert request["subject"] == "CHORIA_AJ.H.T.catchall" and record.state == "complete"


async def test_asyncjobs_request_reply_worker_on_a_short_lease_queue_cannot_call_out(h: Harness, aj: AJ) -> None:
    """asyncjobs refuses a callout with under 3s left; on a Jetbridge queue its run time is the lease (2s here)."""
    await h.make_queue()
    task_type = f"rr:{h.unique}"
    task_id = await aj.enqueue(h.queue, task_type, None, "--tries", "2")
    async with aj.start("rr-handler", "--type", task_type) as handler, \
            aj.start("worker", "--queue", h.queue, "--type", task_type, "--mode", "remote") as worker:
        await handler.ready()
        await worker.ready()
        await worker.objects()
    doc = await aj.get(task_id)
    assert (doc["state"], doc["tries"], doc["last_err"]) == ("expired", 2, "deadline too short")


# Lifecycle events -------------------------------------------------------------------------------------------------


async def test_jetbridge_events_parse_with_asyncjobs(h: Harness, aj: AJ) -> None:
    await h.make_queue()
    task_id = f"ev-{h.unique}"

    async def once(task: jetbridge.Task) -> Any:
        if task.attempt == 1:
            raise jetbridge.Retry("once", code="planned")
        return "done"

    async with aj.start("watch-events", "--task", task_id, "--until", "complete") as watcher:
        await watcher.ready()
        await h.producer.enqueue("ev:t", {"n": 5}, task_id=task_id)
        async with h.dispatcher(), h.service({"ev:t": once}):
            await h.producer.wait(task_id, timeout=20)
        events = await watcher.objects(within=20)

    assert all("error" not in e for e in events), events
    assert [e["state"] for e in events] == ["new", "active", "retry", "active", "complete"]
    assert [e["tries"] for e in events] == [0, 1, 1, 2, 2], "Jetbridge counts a try when the attempt starts"
    assert {(e["type"], e["task_id"], e["queue"], e["task_type"]) for e in events} == {
        ("io.choria.asyncjobs.v1.task_state", task_id, h.queue, "ev:t")}
    assert events[2]["last_error"] == "once" and events[-1]["last_error"] == ""
    assert all(e["task_age_ns"] > 0 for e in events[1:])
