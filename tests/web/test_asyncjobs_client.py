"""An asyncjobs REST client's session, request for request as asyncjobs' API describes it (a server bound to one
queue; bodies without Jetbridge's members), against ``jetbridge serve``: the client needs no change."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bridge.embedded import NatsServer
from tests.harness import Harness

from .conftest import Served, serve_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def bound(nats_server: NatsServer, unique: str) -> Iterator[tuple[Served, str]]:
    """``ajc server run --queue EMAILS``: a server whose tasks all go to one queue."""
    queue = f"EMAILS{unique}"
    served = serve_app(nats_server.url, queue=queue)
    yield served, queue
    served.stop()


async def test_asyncjobs_client_session(bound: tuple[Served, str], nc: Any, unique: str) -> None:
    served, queue = bound
    async with httpx.AsyncClient(base_url=served.url) as c:
        # The operator creates the queue the server is bound to (asyncjobs: POST /v1/queues, Go durations).
        r = await c.post("/v1/queues", json={"name": queue, "max_runtime": "1m", "max_tries": 5, "max_concurrent": 10})
        assert r.status_code == 201
        assert {"name": queue, "max_tries": 5, "max_runtime": 60_000_000_000, "max_concurrent": 10}.items() <= \
            r.json().items()
        assert r.headers["content-type"].startswith("application/json")

        # Enqueue as asyncjobs' clients do: type and a JSON payload, no queue; 201 with a Location header.
        r = await c.post("/v1/tasks", json={"type": "email:new", "payload": {"to": "x@example.com"}})
        assert r.status_code == 201
        task = r.json()
        assert r.headers["location"] == f"/v1/tasks/{task['id']}"
        assert task["queue"] == queue and task["state"] == "new" and task["max_tries"] == 10
        assert base64.b64decode(task["payload"]) == b'{"to":"x@example.com"}'
        # A binary payload and no payload at all ("payload": null, as asyncjobs answers).
        raw = (await c.post("/v1/tasks", json={"type": "email:raw", "payload_base64": "AAEC"})).json()
        assert base64.b64decode(raw["payload"]) == b"\x00\x01\x02"
        empty = (await c.post("/v1/tasks", json={"type": "email:none"})).json()
        assert empty["payload"] is None

        # Read it back, list with filters (state repeatable, queue, type, limit), and as NDJSON.
        assert (await c.get(f"/v1/tasks/{task['id']}")).json()["id"] == task["id"]
        listed = (await c.get("/v1/tasks", params=[("state", "new"), ("state", "retry"), ("queue", queue),
                                                      ("type", "email:new"), ("limit", "10")])).json()
        assert [t["id"] for t in listed["tasks"]] == [task["id"]] and listed["count"] == 1
        ndjson = await c.get("/v1/tasks", params={"queue": queue, "stream": "ndjson"})
        assert len(ndjson.text.splitlines()) == 3
        assert (await c.get("/v1/tasks", params={"limit": 5000, "queue": queue})).status_code == 200  # clamped

        # Retry one and in bulk; unknown ids are per-item results, not HTTP errors.
        assert (await c.post(f"/v1/tasks/{task['id']}/retry")).json()["state"] == "retry"
        bulk = (await c.post("/v1/tasks/retry", json={"ids": [raw["id"], "2ZZZZZZZZZZZZZZZZZZZZZZZZZZ"]})).json()
        assert [x["status"] for x in bulk["results"]] == ["ok", "not_found"]

        # Schedules, info, policies, health.
        body = {"name": f"daily{unique}", "schedule": "@daily", "queue": queue, "task_type": "email:digest",
                "deadline_offset": "1h"}
        sched = await c.post("/v1/schedules", json=body)
        assert sched.status_code == 201 and sched.json()["deadline"] == 3_600_000_000_000
        assert (await c.get(f"/v1/schedules/{body['name']}")).json()["task_type"] == "email:digest"
        assert (await c.delete(f"/v1/schedules/{body['name']}")).status_code == 204
        info = (await c.get("/v1/info")).json()
        assert info["auth"] == "none" and info["queue_count"] >= 1
        assert {p["name"] for p in (await c.get("/v1/retry-policies")).json()["policies"]} == {"10m", "1h", "1m",
                                                                                                "default"}
        assert (await c.get("/readyz")).json()["ready"] is True

        # Errors in asyncjobs' envelope, with its codes and reasons.
        err = (await c.post("/v1/tasks", json={"type": "x", "unknown": 1})).json()["error"]
        assert err["code"] == "invalid_argument" and err["details"]["reason"] == "invalid_json"
        err = (await c.get("/v1/queues/NOPE_QUEUE")).json()["error"]
        assert err["code"] == "not_found" and err["details"]["reason"] == "queue_not_found"

        # Purge, delete the task, delete the queue.
        assert (await c.post(f"/v1/queues/{queue}/purge")).status_code == 202
        assert (await c.delete(f"/v1/tasks/{task['id']}")).status_code == 204
        assert (await c.delete(f"/v1/queues/{queue}")).status_code == 204


async def test_tasks_from_http_run_on_jetbridge(bound: tuple[Served, str], h: Harness) -> None:
    """A task enqueued by an asyncjobs client runs on a Jetbridge handler like any other."""
    served, queue = bound
    h.queue = queue
    await h.make_queue()

    async def send(task: Any) -> Any:
        return {"sent": task.payload["to"]}

    async with httpx.AsyncClient(base_url=served.url) as c, h.service({"email:new": send}), h.dispatcher():
        task = (await c.post("/v1/tasks", json={"type": "email:new", "payload": {"to": "a@b"}})).json()
        assert (await h.producer.wait(task["id"], timeout=30)).state == "complete"
        done = (await c.get(f"/v1/tasks/{task['id']}")).json()
        assert done["result"]["payload"] == {"sent": "a@b"} and done["tries"] == 1
