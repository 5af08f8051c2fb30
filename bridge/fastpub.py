"""Fire-and-forget core publishes that do not await: acknowledgements and lifecycle events.

``await nc.publish()`` runs three coroutines and creates a future per call before the bytes are queued for nats-py's
flusher task. For messages whose sending the dispatcher never waits on (a work item's ``+ACK``/``-NAK``/``+TERM``,
a lifecycle event), :func:`publish_nowait` queues exactly the bytes ``publish`` would (``PUB subject 0 len``, body),
in the same buffer and so in the same order as every other publish, and wakes the flusher the same way.

Like :mod:`bridge.beats` this leans on internals of the pinned nats-py 2.16 (``Client._pending``,
``_pending_data_size``, ``_max_pending_size``, ``_flush_queue``); the dispatcher tests fail if a new version changes
them. Anything unusual (not connected, draining, a full buffer) goes through ``nc.publish`` as before.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.protocol.command import pub_cmd


def publish_nowait(nc: Client, subject: str, payload: bytes) -> bool:
    """Queue a core publish without awaiting; False when it could not be done this way (use ``nc.publish``)."""
    if not nc.is_connected or nc.is_draining_pubs or len(payload) > nc.max_payload or "\r" in subject \
            or "\n" in subject or " " in subject or not subject:
        return False
    cmd = pub_cmd(subject, "", payload)
    if 0 < nc._max_pending_size < nc._pending_data_size + len(cmd):
        return False  # publish() forces a flush here
    nc._pending.append(cmd)
    nc._pending_data_size += len(cmd)
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += len(payload)
    queue = nc._flush_queue
    if queue is not None and queue.empty():
        queue.put_nowait(asyncio.get_running_loop().create_future())  # the flusher resolves it after writing
    return True


async def publish(nc: Client, subject: str, payload: bytes) -> None:
    """:func:`publish_nowait`, else ``nc.publish``."""
    if not publish_nowait(nc, subject, payload):
        await nc.publish(subject, payload)
