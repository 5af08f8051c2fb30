"""A dispatcher announces itself as a NATS micro service, so that `jetbridge info` (and `nats micro ls`) find it.

Service ``jetbridge-dispatcher``, one instance per dispatcher: its metadata carries the dispatcher's id, version,
start time and configured queues; its ``status`` endpoint (``jetbridge.dispatcher.<id>.status``) answers with the
queues it serves right now (which change as queues are created) and its attempts in flight.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import anyio
import nats.micro
import structlog
from nats.micro.request import Request

if TYPE_CHECKING:
    from .dispatcher import Dispatcher

log = structlog.get_logger("jetbridge.announce")

SERVICE_NAME = "jetbridge-dispatcher"
STATUS_SUBJECT = "jetbridge.dispatcher.{id}.status"


def bridge_version() -> str:
    try:
        return version("jetbridge")
    except PackageNotFoundError:
        return "0.0.0"


def status(dispatcher: Dispatcher, started: float) -> dict[str, Any]:
    """What the status endpoint answers: the dispatcher as it is now."""
    return {"id": dispatcher.id, "version": bridge_version(), "started": started,
            "uptime_s": round(time.time() - started, 3), "queues": sorted(dispatcher.workers),
            "configured": list(dispatcher.settings.queues),
            "in_flight": dispatcher.busy.count}


async def announce(dispatcher: Dispatcher) -> None:
    """Register ``dispatcher`` as a micro service until cancelled (run it in the dispatcher's task group)."""
    started = time.time()
    metadata = {"jetbridge.dispatcher": dispatcher.id, "jetbridge.version": bridge_version(),
                "jetbridge.started": str(started), "jetbridge.queues": ",".join(dispatcher.settings.queues)}

    async def on_status(request: Request) -> None:
        await request.respond(json.dumps(status(dispatcher, started)).encode())

    # Shielded: registering flushes the connection, and a flush cancelled half-way leaves nats-py (2.16) a cancelled
    # PONG future whose completion raises InvalidStateError in its reader, silencing the whole connection.
    with anyio.CancelScope(shield=True):
        service = await nats.micro.add_service(dispatcher.nc, name=SERVICE_NAME, version=bridge_version(),
                                               description="Jetbridge dispatcher", metadata=metadata)
        await service.add_endpoint(name="status", subject=STATUS_SUBJECT.format(id=dispatcher.id), handler=on_status)
    try:
        log.debug("announced", dispatcher=dispatcher.id, service=SERVICE_NAME)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await service.stop()
