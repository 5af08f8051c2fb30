"""Contract tests for every path of the REST API against a real app and nats-server."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.harness import Harness

from .conftest import Served

pytestmark = pytest.mark.anyio


def envelope(r: httpx.Response, status: int, code: str, reason: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"]
    if reason is not None:
        assert body["error"]["details"]["reason"] == reason, body
    return body["error"]  # type: ignore[no-any-return]


async def eventually(c: httpx.AsyncClient, path: str, params: dict[str, Any], ok: Any,
                     timeout: float = 20.0) -> Any:
    """GET ``path`` until ``ok(body)``: the index follows the store's stream, a moment after the write."""
    import anyio

    with anyio.fail_after(timeout):
        while True:
            body = (await c.get(path, params=params)).json()
            if ok(body):
                return body
            await anyio.sleep(0.05)


async def test_health_ready_info_policies(web: Served) -> None:
    async with httpx.AsyncClient(base_url=web.url) as c:
        assert (await c.get("/healthz")).json()["status"] == "ok"
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        info = (await c.get("/v1/info")).json()
        assert info["auth"] == "none" and isinstance(info["task_count"], int)
        policies = (await c.get("/v1/retry-policies")).json()["policies"]
        assert [p["name"] for p in policies] == ["10m", "1h", "1m", "default"]
        one_minute = next(p for p in policies if p["name"] == "1m")
        assert len(one_minute["intervals"]) == 20 and one_minute["intervals"][0] == 1_000_000_000


async def test_task_lifecycle_over_http(web: Served, h: Harness) -> None:
    async def echo(task: Any) -> Any:
        return {"got": task.payload}

    async with httpx.AsyncClient(base_url=web.url) as c:
        r = await c.post("/v1/tasks", json={"type": f"{h.unique}:echo", "queue": h.queue, "payload": {"a": 1}})
        assert r.status_code == 201, r.text
        task = r.json()
        assert r.headers["location"] == f"/v1/tasks/{task['id']}"
        assert task["state"] == "new" and task["queue"] == h.queue
        assert base64.b64decode(task["payload"]) == b'{"a":1}'
        async with h.service({f"{h.unique}:echo": echo}), h.dispatcher():
            done = await h.producer.wait(task["id"], timeout=30)
        assert done.state == "complete"
        got = (await c.get(f"/v1/tasks/{task['id']}")).json()
        assert got["state"] == "complete" and got["result"]["payload"] == {"got": {"a": 1}}
        assert got["history"]["attempts"][0]["outcome"] == "complete"
        listed = (await c.get("/v1/tasks", params={"queue": h.queue, "state": ["complete"]})).json()
        assert [t["id"] for t in listed["tasks"]] == [task["id"]] and listed["count"] == 1
        retried = await c.post(f"/v1/tasks/{task['id']}/retry")
        assert retried.status_code == 200 and retried.json()["state"] == "retry"
        cancelled = await c.post(f"/v1/tasks/{task['id']}/cancel")
        assert cancelled.json()["state"] == "terminated"
        bulk = (await c.post("/v1/tasks/retry", json={"ids": [task["id"], "nope"]})).json()
        assert [r["status"] for r in bulk["results"]] == ["ok", "not_found"]
        assert (await c.delete(f"/v1/tasks/{task['id']}")).status_code == 204
        envelope(await c.get(f"/v1/tasks/{task['id']}"), 404, "not_found", "task_not_found")


async def test_list_paging_and_ndjson(web: Served, h: Harness) -> None:
    async with httpx.AsyncClient(base_url=web.url) as c:
        ids = [(await c.post("/v1/tasks", json={"type": "page:x", "queue": h.queue})).json()["id"] for _ in range(5)]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"queue": h.queue, "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await c.get("/v1/tasks", params=params)).json()
            seen += [t["id"] for t in page["tasks"]]
            cursor = page.get("cursor")
            if not cursor:
                break
        assert seen == ids
        r = await c.get("/v1/tasks", params={"queue": h.queue, "stream": "ndjson"})
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert len(r.text.strip().splitlines()) == 5


async def test_idempotency_key_replays(web: Served, h: Harness) -> None:
    async with httpx.AsyncClient(base_url=web.url) as c:
        headers = {"Idempotency-Key": f"k-{h.unique}"}
        first = await c.post("/v1/tasks", json={"type": "idem", "queue": h.queue}, headers=headers)
        again = await c.post("/v1/tasks", json={"type": "idem", "queue": h.queue}, headers=headers)
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"]


async def test_queues(web: Served, unique: str) -> None:
    name = f"W{unique}"
    async with httpx.AsyncClient(base_url=web.url) as c:
        r = await c.post("/v1/queues", json={"name": name, "max_runtime": "30s", "max_concurrent": 5})
        assert r.status_code == 201, r.text
        assert r.json()["max_runtime"] == 30_000_000_000 and r.json()["max_tries"] == -1
        envelope(await c.post("/v1/queues", json={"name": name}), 409, "duplicate", "queue_already_exists")
        assert name in [q["name"] for q in (await c.get("/v1/queues")).json()["queues"]]
        await c.post("/v1/tasks", json={"type": "x", "queue": name})
        assert (await c.get(f"/v1/queues/{name}")).json()["waiting"] == 1
        assert (await c.post(f"/v1/queues/{name}/purge")).status_code == 202
        assert (await c.get(f"/v1/queues/{name}")).json()["waiting"] == 0
        paused = (await c.post(f"/v1/queues/{name}/pause", json={"note": "deploy"})).json()
        assert paused["paused"] is True and paused["note"] == "deploy"
        assert (await c.get(f"/v1/queues/{name}")).json()["paused"] is True
        assert (await c.post(f"/v1/queues/{name}/resume")).json()["paused"] is False
        assert (await c.delete(f"/v1/queues/{name}")).status_code == 204
        envelope(await c.get(f"/v1/queues/{name}"), 404, "not_found", "queue_not_found")
        envelope(await c.post("/v1/queues", json={"name": name, "max_age": "soon"}), 400, "invalid_argument",
                 "invalid_duration")


async def test_schedules(web: Served, unique: str) -> None:
    name = f"s{unique}"
    async with httpx.AsyncClient(base_url=web.url) as c:
        body = {"name": name, "schedule": "@every 1h", "queue": "DEFAULT", "task_type": "report", "payload": {"x": 1}}
        r = await c.post("/v1/schedules", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["max_tries"] == 10 and base64.b64decode(r.json()["payload"]) == b'{"x":1}'
        envelope(await c.post("/v1/schedules", json=body), 409, "duplicate", "schedule_already_exists")
        assert name in [s["name"] for s in (await c.get("/v1/schedules")).json()["schedules"]]
        assert (await c.get(f"/v1/schedules/{name}")).json()["schedule"] == "@every 1h"
        envelope(await c.post("/v1/schedules", json={**body, "name": "b" + name, "schedule": "nope"}), 400,
                 "invalid_argument", "schedule_invalid")
        envelope(await c.post("/v1/schedules", json={**body, "name": "c" + name, "deadline_offset": "5s"}), 400,
                 "invalid_argument", "schedule_invalid")
        assert (await c.delete(f"/v1/schedules/{name}")).status_code == 204
        envelope(await c.get(f"/v1/schedules/{name}"), 404, "not_found", "schedule_not_found")


async def test_dead_letters_and_replay(web: Served, h: Harness) -> None:
    import jetbridge

    calls = []

    async def flaky(task: Any) -> Any:
        calls.append(task.id)
        if len(calls) == 1:
            raise jetbridge.Terminate("bad input")
        return "ok"

    async with httpx.AsyncClient(base_url=web.url) as c, h.service({f"{h.unique}:f": flaky}), h.dispatcher():
        task_id = await h.producer.enqueue(f"{h.unique}:f", queue=h.queue)
        assert (await h.producer.wait(task_id, timeout=30)).state == "terminated"
        dead = await eventually(c, "/v1/dead-letters", {"queue": h.queue}, lambda d: bool(d["dead_letters"]))
        assert [d["id"] for d in dead["dead_letters"]] == [task_id] and dead["total"] == 1
        r = (await c.post("/v1/dead-letters/replay", json={"ids": [task_id]})).json()
        assert r["replayed"] == 1
        assert (await h.producer.wait(task_id, timeout=30)).state == "complete"


async def test_handlers_online(web: Served, h: Harness) -> None:
    async def noop(task: Any) -> None:
        return None

    async with httpx.AsyncClient(base_url=web.url) as c, h.service({f"{h.unique}:n": noop}):
        found = (await c.get("/v1/handlers")).json()["handlers"]
        mine = [s for s in found if s["name"] == f"svc-{h.unique}"]
        assert mine and mine[0]["endpoints"]


async def test_bad_input_is_4xx_in_the_envelope(web: Served) -> None:
    async with httpx.AsyncClient(base_url=web.url) as c:
        envelope(await c.post("/v1/tasks", content=b"{not json", headers={"content-type": "application/json"}), 400,
                 "invalid_argument")
        envelope(await c.post("/v1/tasks", json={"type": "x", "bogus": 1}), 400, "invalid_argument", "invalid_json")
        envelope(await c.post("/v1/tasks", json={"type": "bad type!"}), 400, "invalid_argument")
        envelope(await c.post("/v1/tasks", json={"type": "x", "payload": 1, "payload_base64": "AA=="}), 400,
                 "invalid_argument", "payload_both_set")
        envelope(await c.post("/v1/tasks", json={"type": "x", "queue": "NO_SUCH_QUEUE_X"}), 404, "not_found",
                 "queue_not_found")
        envelope(await c.get("/v1/tasks", params={"limit": 0}), 400, "invalid_argument", "limit_invalid")
        envelope(await c.get("/v1/tasks", params={"limit": "many"}), 400, "invalid_argument")
        envelope(await c.get("/v1/tasks", params={"created_since": "yesterday"}), 400, "invalid_argument")
        envelope(await c.post("/v1/tasks/retry", json={"ids": []}), 400, "invalid_argument", "ids_required")
        envelope(await c.post("/v1/tasks/retry", json={"ids": ["a"] * 101}), 400, "invalid_argument", "ids_too_many")
        envelope(await c.get("/v1/tasks/bad.id"), 400, "invalid_argument", "task_id_invalid")
        envelope(await c.get("/v1/queues/bad.name"), 400, "invalid_argument")
        envelope(await c.get("/v1/nowhere"), 404, "not_found")
        envelope(await c.put("/v1/tasks"), 405, "method_not_allowed")
        envelope(await c.post("/v1/tasks", content=b"x" * (600 * 1024), headers={"content-type": "application/json"}),
                 413, "payload_too_large")


async def test_roles(web_auth: Served, bearer: Any, unique: str) -> None:
    async with httpx.AsyncClient(base_url=web_auth.url) as c:
        envelope(await c.get("/v1/info"), 401, "unauthenticated")
        envelope(await c.get("/v1/info", headers={"Authorization": "Bearer wrong"}), 401, "unauthenticated")
        assert (await c.get("/v1/info", headers=bearer("read"))).json()["auth"] == "bearer"
        assert (await c.get("/healthz")).status_code == 200
        envelope(await c.post("/v1/tasks", json={"type": "x"}, headers=bearer("read")), 403, "permission_denied")
        envelope(await c.post("/v1/queues", json={"name": f"R{unique}"}, headers=bearer("producer")), 403,
                 "permission_denied")
        assert (await c.post("/v1/queues", json={"name": f"R{unique}"}, headers=bearer("operator"))).status_code == 201
        r = await c.post("/v1/tasks", json={"type": "x", "queue": f"R{unique}"}, headers=bearer("producer"))
        assert r.status_code == 201, r.text


async def test_a_chunked_body_over_the_cap_is_refused(web: Served) -> None:
    async def chunks() -> Any:
        for _ in range(80):
            yield b"x" * 8192

    async with httpx.AsyncClient(base_url=web.url) as c:
        r = await c.post("/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code in (400, 413) and r.json()["error"]["code"] in ("invalid_argument", "payload_too_large")
