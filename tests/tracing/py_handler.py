"""A Python handler with the tracing middleware, for tests/tracing: serves the type in ``JETBRIDGE_TYPE``.

An attempt fails with a retry while its number is at most the payload's ``fail_attempts``.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import nats
from jetbridge import Retry, Service, Task, serve, tracing


async def work(task: Task) -> Any:
    if task.attempt <= int(task.payload.get("fail_attempts", 0)):
        raise Retry(f"attempt {task.attempt} fails on purpose", code="planned_failure", after=0.05)
    return {"lang": "python", "attempt": task.attempt}


async def handle(task: Task) -> Any:
    return await tracing.middleware(task, work)


async def main() -> None:
    tracing.configure("traced-python")
    nc = await nats.connect(os.environ["NATS_URL"])
    service = Service(nc, "traced-python")
    service.add_handler(os.environ["JETBRIDGE_TYPE"], handle)
    try:
        await serve(service, on_ready=lambda: print("ready", flush=True))
    finally:
        tracing.shutdown()
        await nc.close()


if __name__ == "__main__":
    anyio.run(main)
