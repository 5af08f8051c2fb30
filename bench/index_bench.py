"""The task index (bridge/index.py) at scale: catch-up time, memory per task, and list/count latency.

The store is filled with ``n`` task documents published straight to their subjects (no queue items: only the store
matters here), in a spread of states, types and queues, a fifth of them with errors. Then a :class:`TaskIndex`
follows the store until it has caught up, and list and count queries by state, type (exact and pattern) and queue
run against it, each many times, from the same process as a CLI or HTTP API would.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
import tracemalloc
from typing import Any

import anyio
import nats
from jetbridge._task import TaskRecord, encode_task
from jetbridge._timeutil import format_ns, now_ns

from bridge.index import Query, TaskIndex

from .infra import Server, log, percentile

STATES = ["complete"] * 6 + ["new", "retry", "active", "expired", "terminated", "unreachable"]
TYPES = ["email:new", "email:bounce", "sms:send", "pdf:render", "image:resize", "report:daily"]
QUEUES = ["EMAIL", "SMS", "PDF", "IMAGES"]
CODES = ["handler_error", "timeout", "bad_input", "deadline", "max_tries"]


def _doc(i: int, t0: int) -> bytes:
    state = STATES[i % len(STATES)]
    failed = state in ("retry", "expired", "terminated", "unreachable")
    return encode_task(TaskRecord(
        id=f"bench{i:022d}", type=TYPES[(i // 3) % len(TYPES)], queue=QUEUES[(i // 7) % len(QUEUES)],
        payload=b'{"to":"someone@example.com"}', max_tries=10, state=state, created=format_ns(t0 + i * 1000),
        tries=1 if state != "new" else 0, last_err=f"upstream said no ({i % 97})" if failed else "",
        last_err_code=CODES[i % len(CODES)] if failed else ""))


async def _fill(nc: Any, n: int) -> None:
    js = nc.jetstream()
    await js.add_stream(name="CHORIA_AJ_TASKS", subjects=["CHORIA_AJ.T.*"], max_msgs_per_subject=1,
                        storage="memory", allow_direct=True)
    t0 = now_ns() - n * 1000
    for start in range(0, n, 5000):
        for i in range(start, min(n, start + 5000)):
            await nc.publish(f"CHORIA_AJ.T.bench{i:022d}", _doc(i, t0))
        await nc.flush()
    while (await js.stream_info("CHORIA_AJ_TASKS")).state.messages < n:  # noqa: ASYNC110 - no "stored" event
        await asyncio.sleep(0.2)


def _memory_per_task(n: int) -> float:
    """Bytes the index allocates per task, measured on a separate build (tracemalloc slows the catch-up)."""
    docs = [_doc(i, 0) for i in range(n)]
    tracemalloc.start()
    index = TaskIndex()
    for i, data in enumerate(docs):
        index.put_raw(data, i)
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return round(used / n, 1)


def _timed(fn: Any, reps: int) -> dict[str, float]:
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(percentile(samples, 50) or 0.0, 3), "p95_ms": round(percentile(samples, 95) or 0.0, 3),
            "max_ms": round(max(samples), 3)}


def _queries(index: TaskIndex, reps: int) -> dict[str, Any]:
    rng = random.Random(1)
    out: dict[str, Any] = {}

    def state_q() -> Query:
        return Query(states=frozenset({rng.choice(STATES)}))

    def type_q() -> Query:
        return Query(type=rng.choice(TYPES))

    def queue_q() -> Query:
        return Query(queue=rng.choice(QUEUES), states=frozenset({rng.choice(["expired", "terminated"])}))

    cases = {
        "state": state_q, "type": type_q, "type_pattern": lambda: Query(type=rng.choice(["email:*", "*:send"])),
        "queue_and_state": queue_q, "error_text": lambda: Query(text=f"({rng.randrange(97)})"),
    }
    for name, make in cases.items():
        out[f"list_{name}"] = _timed(lambda make=make: index.page(make(), limit=100), reps)
        out[f"list_newest_{name}"] = _timed(lambda make=make: index.page(make(), limit=100, newest_first=True), reps)
        out[f"count_{name}"] = _timed(lambda make=make: index.count(make()), reps)
    page = index.page(Query(states=frozenset({"complete"})), limit=100)
    out["list_state_next_page"] = _timed(lambda: index.page(Query(states=frozenset({"complete"})), limit=100,
                                                          cursor=page.cursor), reps)
    return out


async def index_scenario(*, n: int, reps: int = 60, memory_sample: int = 100_000) -> dict[str, Any]:
    result: dict[str, Any] = {"tasks": n}
    with Server() as srv:
        nc = await nats.connect(srv.url)
        try:
            t = time.monotonic()
            await _fill(nc, n)
            result["fill_s"] = round(time.monotonic() - t, 1)
            log(f"stored {n} tasks in {result['fill_s']}s")
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            index = TaskIndex()
            t = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(index.follow, nc)
                await index.caught_up.wait()
                result["catch_up_s"] = round(time.monotonic() - t, 2)
                result["catch_up_tasks_per_s"] = round(n / max(result["catch_up_s"], 1e-9))
                result["indexed"] = len(index)
                result["rss_growth_mb"] = round(
                    (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024, 1)
                result["queries"] = _queries(index, reps)
                tg.cancel_scope.cancel()
        finally:
            await nc.close()
    result["index_bytes_per_task"] = _memory_per_task(min(n, memory_sample))
    worst = max(v["p95_ms"] for v in result["queries"].values())
    result["worst_p95_ms"] = round(worst, 3)
    log(f"index n={n}: catch-up {result['catch_up_s']}s, worst p95 {worst:.1f} ms, "
        f"{result['index_bytes_per_task']} B/task")
    return result


def main_both(n_small: int, n_large: int | None) -> dict[str, Any]:
    """Run at ``n_small`` and (if given) ``n_large`` tasks, each on a fresh server."""
    out: dict[str, Any] = {f"n_{n_small}": asyncio.run(index_scenario(n=n_small))}
    if n_large:
        out[f"n_{n_large}"] = asyncio.run(index_scenario(n=n_large, reps=20))
    return out


