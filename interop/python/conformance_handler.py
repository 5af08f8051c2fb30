"""The Python SDK's conformance handler: the task types of interop/README.md, on jetbridge.Service."""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import Any

import anyio
import jetbridge
import nats

INSTANCE = os.environ.get("JETBRIDGE_INSTANCE") or f"python-{secrets.token_hex(4)}"
EVENTS = "jetbridge.conformance.events"


class Conformance:
    """The conformance task types; each method is one task type's handler."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc

    async def event(self, kind: str, task: jetbridge.Task, **extra: Any) -> None:
        body = {"event": kind, "task_id": task.id, "attempt": task.attempt, "instance": INSTANCE, **extra}
        await self.nc.publish(EVENTS, json.dumps(body).encode())

    async def echo(self, task: jetbridge.Task) -> Any:
        return task.payload

    async def info(self, task: jetbridge.Task) -> Any:
        return {"instance": INSTANCE, "lang": "python", "task_id": task.id, "attempt": task.attempt,
                "max_attempts": task.max_attempts, "queue": task.queue, "budget_ms": int(task.budget * 1000)}

    async def fail(self, task: jetbridge.Task) -> Any:
        times = int(task.payload.get("times", 0))
        if task.attempt <= times:
            raise jetbridge.Retry(f"failure {task.attempt} of {times}", code="planned_failure")
        return {"attempt": task.attempt}

    async def retry_after(self, task: jetbridge.Task) -> Any:
        if task.attempt == 1:
            raise jetbridge.Retry("retry later", code="planned_failure", after=int(task.payload["ms"]) / 1000)
        return {"attempt": task.attempt}

    async def terminate(self, task: jetbridge.Task) -> Any:
        raise jetbridge.Terminate(str(task.payload.get("message", "terminated")), code="planned_terminate")

    async def sleep(self, task: jetbridge.Task) -> Any:
        p = task.payload
        ms, steps = int(p.get("ms", 0)), max(1, int(p.get("steps", 1)))
        only = p.get("only_attempt")
        if only is not None and task.attempt != only:
            return {"slept_ms": 0, "attempt": task.attempt}
        try:
            with anyio.CancelScope(shield=bool(p.get("ignore_cancel"))):
                for i in range(1, steps + 1):
                    await anyio.sleep(ms / steps / 1000)
                    await task.heartbeat(i / steps, f"step {i} of {steps}")
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self.event("cancelled", task, reason=task.cancel_reason or "timeout")
            raise
        return {"slept_ms": ms, "attempt": task.attempt}

    async def big(self, task: jetbridge.Task) -> Any:
        return jetbridge.Bytes(b"a" * int(task.payload["bytes"]), "application/octet-stream")

    async def panic(self, task: jetbridge.Task) -> Any:
        raise RuntimeError("conformance panic")

    async def mw(self, task: jetbridge.Task) -> Any:
        return {"trail": ["handler"]}

    mw_blocked = mw  # middleware keeps it from running (SPEC §12.2)


TASK_TYPES = ("echo", "info", "fail", "retry_after", "terminate", "sleep", "big", "panic", "mw", "mw_blocked")


def tagger(name: str) -> jetbridge.Middleware:
    """Appends ``name`` to a ``trail`` result on the way out (SPEC §12.2)."""

    async def tag(task: jetbridge.Task, call_next: jetbridge.Next) -> Any:
        result = await call_next(task)
        if isinstance(result, dict) and isinstance(result.get("trail"), list):
            result["trail"].append(name)
        return result

    return tag


async def block(task: jetbridge.Task, call_next: jetbridge.Next) -> Any:
    raise jetbridge.Terminate("blocked by middleware", code="mw_blocked")


def use_middleware(service: jetbridge.Service) -> None:
    """The conformance middleware in the order SPEC §12.2 gives: outer, group (conf:mw*), inner, block."""
    service.use(tagger("outer"))
    service.use_for("conf:mw*", tagger("group"))
    service.use(tagger("inner"))
    service.use_for("conf:mw_blocked", block)


def build(nc: Any) -> jetbridge.Service:
    service = jetbridge.Service(
        nc, "jetbridge-conformance", prefix=os.environ.get("JETBRIDGE_SUBJECT_PREFIX", "jetbridge.task"),
        concurrency=int(os.environ.get("JETBRIDGE_CONCURRENCY", "64")))
    handlers = Conformance(nc)
    use_middleware(service)
    for name in TASK_TYPES:
        fn = getattr(handlers, name)

        async def handler(task: jetbridge.Task, fn: Any = fn) -> Any:
            await handlers.event("started", task)
            return await fn(task)

        service.add_handler(f"conf:{name}", handler)
    return service


async def main() -> None:
    # Reconnect without limit: a handler rides out server restarts and failovers (SPEC §2).
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"), max_reconnect_attempts=-1,
                            reconnect_time_wait=0.25)
    service = build(nc)
    await jetbridge.serve(service, on_ready=lambda: print("ready", flush=True))
    await nc.drain()
    sys.exit(0)


if __name__ == "__main__":
    anyio.run(main)
