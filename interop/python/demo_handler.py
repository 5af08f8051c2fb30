"""The Python side of `make demo`: a mail sender that fails its first attempt, and a thumbnailer with progress."""

from __future__ import annotations

import os
from typing import Any

import anyio
import jetbridge
import nats


async def main() -> None:
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    service = jetbridge.Service(nc, "demo-python")

    @service.handler("email:send")
    async def send(task: jetbridge.Task) -> Any:
        if task.attempt == 1:
            raise jetbridge.Retry("smtp server busy (421)", code="smtp_busy")
        return {"sent_to": task.payload["to"], "attempt": task.attempt}

    @service.handler("image:thumbnail")
    async def thumbnail(task: jetbridge.Task) -> Any:
        for step in range(1, 5):
            await anyio.sleep(0.25)
            await task.heartbeat(step / 4, f"resizing {task.payload['file']}: pass {step} of 4")
        return {"thumbnail": task.payload["file"].replace(".png", "-128.png"), "size": [128, 128]}

    await jetbridge.serve(service, on_ready=lambda: print("ready", flush=True))
    await nc.drain()


if __name__ == "__main__":
    anyio.run(main)
