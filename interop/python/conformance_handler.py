"""The Python SDK's conformance handler: the task types of interop/README.md, on jetbridge.Service."""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import Any

import anyio
import nats

import jetbridge

INSTANCE = os.environ.get("JETBRIDGE_INSTANCE") or f"python-{secrets.token_hex(4)}"
EVENTS = "jetbridge.conformance.events"


def build(nc: Any) -> jetbridge.Service:
    service = jetbridge.Service(
        nc, "jetbridge-conformance", prefix=os.environ.get("JETBRIDGE_SUBJECT_PREFIX", "jetbridge.task"),
        concurrency=int(os.environ.get("JETBRIDGE_CONCURRENCY", "64")))

    async def event(kind: str, task: jetbridge.Task, **extra: Any) -> None:
        body = {"event": kind, "task_id": task.id, "attempt": task.attempt, "instance": INSTANCE, **extra}
        await nc.publish(EVENTS, json.dumps(body).encode())

    def wrap(fn: Any) -> Any:
        async def handler(task: jetbridge.Task) -> Any:
            await event("started", task)
            return await fn(task)

        return handler

    @wrap
    async def echo(task: jetbridge.Task) -> Any:
        return task.payload

    @wrap
    async def info(task: jetbridge.Task) -> Any:
        return {"instance": INSTANCE, "lang": "python", "task_id": task.id, "attempt": task.attempt,
                "max_attempts": task.max_attempts, "queue": task.queue, "budget_ms": int(task.budget * 1000)}

    @wrap
    async def fail(task: jetbridge.Task) -> Any:
        times = int(task.payload.get("times", 0))
        if task.attempt <= times:
            raise jetbridge.Retry(f"failure {task.attempt} of {times}", code="planned_failure")
        return {"attempt": task.attempt}

    @wrap
    async def retry_after(task: jetbridge.Task) -> Any:
        if task.attempt == 1:
            raise jetbridge.Retry("retry later", code="planned_failure", after=int(task.payload["ms"]) / 1000)
        return {"attempt": task.attempt}

    @wrap
    async def terminate(task: jetbridge.Task) -> Any:
        raise jetbridge.Terminate(str(task.payload.get("message", "terminated")), code="planned_terminate")

    @wrap
    async def sleep(task: jetbridge.Task) -> Any:
        p = task.payload
        ms, steps = int(p.get("ms", 0)), max(1, int(p.get("steps", 1)))
        only = p.get("only_attempt")
        if only is not None and task.attempt != only:
            return {"slept_ms": 0, "attempt": task.attempt}
        if p.get("ignore_cancel"):
            with anyio.CancelScope(shield=True):
                for i in range(1, steps + 1):
                    await anyio.sleep(ms / steps / 1000)
                    await task.heartbeat(i / steps, f"step {i} of {steps}")
            return {"slept_ms": ms, "attempt": task.attempt}
        try:
            for i in range(1, steps + 1):
                await anyio.sleep(ms / steps / 1000)
                await task.heartbeat(i / steps, f"step {i} of {steps}")
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await event("cancelled", task, reason=task.cancel_reason or "timeout")
            raise
        return {"slept_ms": ms, "attempt": task.attempt}

    @wrap
    async def big(task: jetbridge.Task) -> Any:
        return jetbridge.Bytes(b"a" * int(task.payload["bytes"]), "application/octet-stream")

    @wrap
    async def panic(task: jetbridge.Task) -> Any:
        raise RuntimeError("conformance panic")

    for name, fn in {"echo": echo, "info": info, "fail": fail, "retry_after": retry_after, "terminate": terminate,
                     "sleep": sleep, "big": big, "panic": panic}.items():
        service.add_handler(f"conf:{name}", fn)
    return service


async def main() -> None:
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    service = build(nc)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        print("ready", flush=True)
        import signal

        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                service.stop()
                break
    await nc.drain()
    sys.exit(0)


if __name__ == "__main__":
    anyio.run(main)
