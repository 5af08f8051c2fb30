"""The HTTP API (``jetbridge serve``) at scale: list, count and get latency (p50, p95) with ``n`` tasks stored,
and enqueue throughput over HTTP.

The store is filled as in bench/index_bench.py (documents published straight to their subjects, in a spread of
states, types and queues). Then a real ``jetbridge serve`` process starts on it (rate limit off) and the time until
``/readyz`` says its index has caught up is taken. Requests come from this process over keep-alive connections:
latency one request at a time (what one dashboard user sees), enqueue from ``clients`` concurrent connections.
``count`` is a list with ``limit=1``: the ``total`` it answers is the index's count (asyncjobs has no count path).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

import httpx
import nats

from bridge.embedded import free_port

from .index_bench import QUEUES, STATES, TYPES, _fill
from .infra import Proc, Server, log, percentile


def _stats(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(samples, 50) or 0.0, 2), "p95_ms": round(percentile(samples, 95) or 0.0, 2),
            "max_ms": round(max(samples), 2), "n": len(samples)}


async def _timed(c: httpx.AsyncClient, reps: int, make: Any) -> dict[str, float]:
    samples = []
    for _ in range(reps):
        path, params = make()
        t = time.perf_counter()
        r = await c.get(path, params=params)
        samples.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path} {params}: {r.status_code} {r.text[:300]}")
    return _stats(samples)


async def _latency(c: httpx.AsyncClient, n: int, reps: int) -> dict[str, Any]:
    rng = random.Random(7)
    cases = {
        "get": lambda: (f"/v1/tasks/bench{rng.randrange(n):022d}", {}),
        "list_state": lambda: ("/v1/tasks", {"state": rng.choice(STATES), "limit": 100}),
        "list_queue_type": lambda: ("/v1/tasks", {"queue": rng.choice(QUEUES), "type": rng.choice(TYPES),
                                                  "limit": 100}),
        "list_newest": lambda: ("/v1/tasks", {"order": "newest", "limit": 100}),
        "list_error_text": lambda: ("/v1/tasks", {"error": f"({rng.randrange(97)})", "limit": 100}),
        "count_state": lambda: ("/v1/tasks", {"state": rng.choice(STATES), "limit": 1}),
        "count_queue_type": lambda: ("/v1/tasks", {"queue": rng.choice(QUEUES), "type": rng.choice(TYPES),
                                                   "limit": 1}),
        "dead_letters": lambda: ("/v1/dead-letters", {"queue": rng.choice(QUEUES), "limit": 100}),
    }
    for path, params in (cases["get"](), cases["list_state"]()):  # warm-up: connections, caches, first imports
        await c.get(path, params=params)
    return {name: await _timed(c, reps, make) for name, make in cases.items()}


async def _enqueue(url: str, total: int, clients: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    per_client = total // clients

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            for _ in range(per_client):
                t = time.perf_counter()
                r = await c.post("/v1/tasks", json={"type": "bench:noop", "queue": "HTTPBENCH", "payload": {"n": 1}})
                latencies.append((time.perf_counter() - t) * 1000)
                if r.status_code != 201:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - start
    done = per_client * clients - len(errors)
    out: dict[str, Any] = {"tasks": per_client * clients, "clients": clients, "seconds": round(seconds, 2),
                           "tasks_per_s": round(done / seconds, 1), "errors": len(errors),
                           "request": _stats(latencies)}
    if errors:
        out["first_error"] = errors[0]
    return out


async def api_scenario(*, n: int = 100_000, reps: int = 200, enqueue_n: int = 4000, clients: int = 16) -> dict[str, Any]:
    result: dict[str, Any] = {"tasks": n}
    with Server() as srv:
        nc = await nats.connect(srv.url)
        try:
            t = time.monotonic()
            await _fill(nc, n)
            result["fill_s"] = round(time.monotonic() - t, 1)
        finally:
            await nc.close()
        log(f"stored {n} tasks in {result['fill_s']}s")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve = Proc("serve", [sys.executable, "-m", "bridge", "--server", srv.url, "serve", "--listen",
                               f"127.0.0.1:{port}", "--rate", "0"], ready="dashboard and API at")
        t = time.monotonic()
        serve.start(timeout=60)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=60,
                                         transport=httpx.AsyncHTTPTransport(retries=50)) as c:
                while (await c.get("/readyz")).status_code != 200:  # noqa: ASYNC110 - /readyz is the signal
                    if time.monotonic() - t > 300:
                        raise RuntimeError("serve: the index did not catch up in 300 s")
                    await asyncio.sleep(0.1)
                result["ready_s"] = round(time.monotonic() - t, 2)
                info = (await c.get("/v1/info")).json()
                result["indexed"] = info.get("task_count")
                log(f"serve ready in {result['ready_s']}s with {result['indexed']} tasks indexed")
                result["latency"] = await _latency(c, n, reps)
                created = await c.post("/v1/queues", json={"name": "HTTPBENCH", "max_concurrent": 1000})
                if created.status_code != 201:
                    raise RuntimeError(f"create queue: {created.status_code} {created.text[:300]}")
            result["enqueue"] = await _enqueue(url, enqueue_n, clients)
            mem = serve.mem_kb()
            result["serve_rss_mb"] = round(mem.get("VmRSS", 0) / 1024, 1)
            result["serve_peak_rss_mb"] = round(mem.get("VmHWM", 0) / 1024, 1)
        finally:
            serve.stop()
    lat = result["latency"]
    result["worst_p95_ms"] = max(v["p95_ms"] for v in lat.values())
    log(f"api n={n}: get p95 {lat['get']['p95_ms']} ms, list p95 {lat['list_state']['p95_ms']} ms, "
        f"count p95 {lat['count_state']['p95_ms']} ms, enqueue {result['enqueue']['tasks_per_s']} tasks/s")
    return result


if __name__ == "__main__":  # python -m bench.api_bench [N]: this scenario alone, JSON on stdout
    import json

    print(json.dumps(asyncio.run(api_scenario(n=int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)), indent=2))
