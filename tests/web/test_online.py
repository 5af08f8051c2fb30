"""Handlers and dispatchers online (``/v1/handlers``, ``/v1/dispatchers``, the overview) with real processes:
a Python SDK service, ``jetbridge handle`` (shell), the Node library's example when built, and ``jetbridge run``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import jetbridge
import pytest

from bridge.embedded import NatsServer
from bridge.web.online import describe_dispatcher, group_services, sdk_of
from tests.harness import Harness

from .conftest import Served
from .test_api import eventually

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
JB = [sys.executable, "-m", "bridge"]


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"jetbridge.sdk": "python/0.3.0"}, ("python", "0.3.0")),
    ({"jetbridge.sdk": "go/0.1.0", "jetbridge.protocols": "1,1.1"}, ("go", "0.1.0")),
    ({"jetbridge.sdk": "rust/0.1.0"}, ("rust", "0.1.0")),
    ({"jetbridge.sdk": "node/0.1.0"}, ("node", "0.1.0")),
    ({"jetbridge.sdk": "shell/0.3.0"}, ("shell", "0.3.0")),
    ({"jetbridge.sdk": "elixir"}, ("elixir", None)),
    ({"language": "java"}, ("java", None)),
    ({"lang": "ruby"}, ("ruby", None)),
    ({}, (None, None)),
])
def test_language_comes_from_jetbridge_sdk(metadata: dict[str, str], expected: tuple[str | None, str | None]) -> None:
    assert sdk_of(metadata) == expected


def test_a_dispatcher_that_does_not_answer_is_shown_from_its_announcement() -> None:
    d = describe_dispatcher({"id": "d1", "version": "1.0", "queues": ["A", "B"], "started": 100.0,
                             "in_flight": None}, now=160.0)
    assert d["answered"] is False and d["in_flight"] is None and d["uptime_s"] == 60.0 and d["queues"] == ["A", "B"]


def test_instances_of_a_service_are_one_row_with_weighted_average_time() -> None:
    def instance(i: str, requests: int, avg_ns: int) -> dict[str, Any]:
        return {"name": "imaging", "id": i, "version": "1.2.0", "language": "go", "sdk_version": "0.1.0",
                "endpoints": [{"name": "resize", "subject": "s", "task_type": "image:resize", "requests": requests,
                               "errors": 1, "average_processing_time": avg_ns}]}

    rows = group_services([instance("a", 3, 1_000_000), instance("b", 1, 5_000_000),
                           {**instance("c", 0, 0), "version": "1.3.0"}])
    assert [(r["version"], r["instances"]) for r in rows] == [("1.2.0", 2), ("1.3.0", 1)]
    assert rows[0]["requests"] == 4 and rows[0]["errors"] == 2 and rows[0]["avg_ms"] == 2.0
    assert rows[0]["task_types"] == ["image:resize"] and rows[1]["avg_ms"] is None


async def test_python_sdk_handler_shows_its_language_and_task_types(web: Served, h: Harness) -> None:
    async def noop(task: Any) -> None:
        return None

    async with httpx.AsyncClient(base_url=web.url) as c, h.service({f"{h.unique}:n": noop}):
        found = (await c.get("/v1/handlers")).json()["handlers"]
        mine = [s for s in found if s["name"] == f"svc-{h.unique}"]
        assert len(mine) == 1, found
        assert mine[0]["language"] == "python" and mine[0]["sdk_version"] == jetbridge.__version__
        assert "1.1" in mine[0]["protocols"]
        assert [e["task_type"] for e in mine[0]["endpoints"]] == [f"{h.unique}:n"]
        assert all(s["name"] != "jetbridge-dispatcher" for s in found)  # dispatchers have their own list
        page = (await c.get("/")).text
        assert f'data-handler="svc-{h.unique}"' in page and f"<code>{h.unique}:n</code>" in page


@contextmanager
def process(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            **kwargs)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err.decode()


async def test_shell_handler_shows_shell(web: Served, nats_server: NatsServer, unique: str) -> None:
    name = f"sh-{unique}"
    with process([*JB, "--server", nats_server.url, "handle", f"{unique}:cat", "--name", name, "--", "cat"]):
        async with httpx.AsyncClient(base_url=web.url) as c:
            found = await eventually(c, "/v1/handlers", {},
                                     lambda d: any(s["name"] == name for s in d["handlers"]), timeout=60)
    mine = next(s for s in found["handlers"] if s["name"] == name)
    assert mine["language"] == "shell" and mine["sdk_version"] == jetbridge.__version__
    assert [e["task_type"] for e in mine["endpoints"]] == [f"{unique}:cat"]


NODE_DIST = ROOT / "interop" / "node" / "dist"


@pytest.mark.skipif(not (NODE_DIST.exists() and shutil.which("node")),
                    reason="needs the Node library built: make interop-build LANGS=node")
async def test_node_handler_shows_node(web: Served, nats_server: NatsServer) -> None:
    env = {**os.environ, "NATS_URL": nats_server.url}
    with process(["node", "examples/wordcount.js"], cwd=ROOT / "interop" / "node", env=env) as proc:
        async with httpx.AsyncClient(base_url=web.url) as c:
            found = await eventually(c, "/v1/handlers", {}, lambda d: any(
                s["name"] == "wordcount" and s["language"] == "node" for s in d["handlers"]), timeout=60)
        assert proc.poll() is None
    mine = next(s for s in found["handlers"] if s["name"] == "wordcount" and s["language"] == "node")
    assert mine["sdk_version"] and [e["task_type"] for e in mine["endpoints"]] == ["text:wordcount"]


async def test_a_running_dispatcher_is_listed_until_it_stops(web: Served, nats_server: NatsServer, h: Harness,
                                                             tmp_path: Path) -> None:
    did = f"d-{h.unique}"
    env = {**os.environ, "JETBRIDGE_DISPATCHER_ID": did, "JETBRIDGE_LOG_FORMAT": "json"}
    args = [*JB, "--server", nats_server.url, "--data-dir", str(tmp_path), "run", "--queue", h.queue]
    started = await anyio.run_process([*args, "--background"], env=env, check=False)
    assert started.returncode == 0, started.stderr.decode()  # returns once the dispatcher serves
    try:
        async with httpx.AsyncClient(base_url=web.url) as c:
            found = await eventually(c, "/v1/dispatchers", {},
                                     lambda d: any(x["id"] == did for x in d["dispatchers"]), timeout=60)
            mine = next(x for x in found["dispatchers"] if x["id"] == did)
            assert mine["answered"] and mine["queues"] == [h.queue] and mine["in_flight"] == 0
            assert mine["configured"] == [h.queue] and mine["uptime_s"] >= 0
            page = (await c.get("/")).text
            assert f'data-dispatcher="{did}"' in page
    finally:
        stopped = await anyio.run_process([*JB, "--server", nats_server.url, "--data-dir", str(tmp_path), "stop"],
                                          env=env, check=False)
        assert stopped.returncode == 0, stopped.stderr.decode()
    async with httpx.AsyncClient(base_url=web.url) as c:
        gone = (await c.get("/v1/dispatchers")).json()["dispatchers"]
    assert all(x["id"] != did for x in gone)


async def test_limits_in_force_are_listed(web: Served, h: Harness) -> None:
    from bridge.limit_store import delete_spec, open_bucket, save_spec
    from bridge.limits import make_spec

    kv = await open_bucket(h.nc, create=True)
    assert kv is not None
    spec = make_spec(f"{h.unique}:*", "*", 3, "50/s", None, False)
    await save_spec(kv, spec)
    try:
        async with httpx.AsyncClient(base_url=web.url) as c:
            listed = (await c.get("/v1/limits")).json()["limits"]
        mine = [row for row in listed if row["types"] == f"{h.unique}:*"]
        assert mine == [{"id": spec.id, "types": f"{h.unique}:*", "queues": "*", "concurrency": 3, "rate": "50/s",
                         "rate_per_s": 50.0, "burst": spec.burst, "adaptive": False, "running": 0}], listed
    finally:
        await delete_spec(kv, spec.id)
