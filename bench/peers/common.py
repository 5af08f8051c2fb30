"""What both peers' programs share (runs in the peers' own venv): the no-op body, the handler's accounting and
a producer loop with a fixed number of publishes in flight.

The handler records each task's ``n``; a daemon thread writes ``{calls, distinct, ns}`` to ``$PEER_STATS`` once the
count has stopped moving, so the bench can check that every task ran exactly once without costing the drain.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

DATA = "x" * 32
calls = 0
seen: set[int] = set()


def record(n: int) -> None:
    global calls
    calls += 1
    seen.add(n)


def _writer(path: str) -> None:
    written, last = -1, -1
    while True:
        time.sleep(0.25)
        now = calls
        if now == last and now != written:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump({"calls": now, "distinct": len(seen), "ns": sorted(seen)}, f)
            os.replace(tmp, path)
            written = now
        last = now


def start_stats() -> None:
    path = os.environ.get("PEER_STATS")
    if path:
        threading.Thread(target=_writer, args=(f"{path}.{os.getpid()}",), daemon=True).start()


def body(n: int) -> dict[str, Any]:
    return {"n": n, "kind": "noop", "data": DATA}


async def produce(n: int, in_flight: int, send: Callable[[int], Awaitable[None]]) -> None:
    """``in_flight`` coroutines, each awaiting one publish (and its PubAck) at a time; prints the timing as JSON."""
    counter = iter(range(n))
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            try:
                await send(i)
            except Exception:  # noqa: BLE001 - counted, the bench's loss check reports it
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    seconds = time.perf_counter() - start
    print(json.dumps({"n": n, "errors": errors, "seconds": round(seconds, 3),
                      "tasks_per_s": round(n / seconds, 1), "cpu_s": round(time.process_time(), 3)}), flush=True)
