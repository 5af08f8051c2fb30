"""Publishes queued without awaiting: the bytes ``Client.publish`` would write, minus its coroutines.

``await nc.publish()`` runs three coroutines and creates a future per call before the bytes are queued for nats-py's
flusher task. :func:`publish_nowait` queues exactly the bytes ``publish`` would (``PUB``/``HPUB``, subject, reply,
headers, body) in the same buffer, and so in the same order as every other publish, and wakes the flusher the same
way. The dispatcher uses it for work-item acknowledgements, lifecycle events and its requests (the reply is awaited
on a future, not the publish); the producer for its JetStream publishes.

Anything unusual (not connected, draining, a full buffer, a subject or header ``publish`` would refuse) returns
False, and the caller uses ``nc.publish``, which buffers, raises or flushes as it always did. This leans on internals
of the pinned nats-py 2.16 (``Client._pending``, ``_pending_data_size``, ``_max_pending_size``, ``_flush_queue``);
``tests/sdk/test_fastread.py`` checks the bytes against ``publish``'s and fails if a new version changes them.
"""

from __future__ import annotations

import asyncio
import re

from nats.aio.client import Client

#: what nats-py's ``publish`` refuses in a subject (``_SUBJECT_INVALID_RE``)
_BAD_SUBJECT = re.compile(r"[ \t\r\n]")
#: header names nats-py accepts (``_HEADER_KEY_RE``); anything else goes through ``publish``, which raises
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_block(headers: dict[str, str]) -> bytes | None:
    """``NATS/1.0`` and the header lines as ``publish`` writes them, or None if ``publish`` would refuse them."""
    lines = ["NATS/1.0\r\n"]
    for name, value in headers.items():
        key = name.strip()
        if not key:
            continue
        if not _HEADER_NAME.fullmatch(key) or "\r" in value or "\n" in value:
            return None  # publish() raises for a bad name and rewrites line breaks: let it
        lines.append(f"{key}: {value.strip()}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


def publish_nowait(nc: Client, subject: str, payload: bytes, reply: str = "",
                   headers: dict[str, str] | None = None) -> bool:
    """Queue a core publish without awaiting; False when it could not be done this way (use ``nc.publish``)."""
    if not nc.is_connected or nc.is_draining_pubs or len(payload) > nc.max_payload or not subject \
            or _BAD_SUBJECT.search(subject) or (reply and _BAD_SUBJECT.search(reply)):
        return False
    if headers is None:
        cmd = b"".join((f"PUB {subject} {reply} {len(payload)}\r\n".encode(), payload, b"\r\n"))
    else:
        block = _header_block(headers)
        if block is None:
            return False
        cmd = b"".join((f"HPUB {subject} {reply} {len(block)} {len(block) + len(payload)}\r\n".encode(),
                        block, payload, b"\r\n"))
    if 0 < nc._max_pending_size < nc._pending_data_size + len(cmd):
        return False  # publish() forces a flush here
    nc._pending.append(cmd)
    nc._pending_data_size += len(cmd)
    stats = nc.stats
    stats["out_msgs"] += 1
    stats["out_bytes"] += len(payload)
    queue = nc._flush_queue
    if queue is not None and queue.empty():
        queue.put_nowait(asyncio.get_running_loop().create_future())  # the flusher resolves it after writing
    return True


async def publish(nc: Client, subject: str, payload: bytes, reply: str = "",
                  headers: dict[str, str] | None = None) -> None:
    """:func:`publish_nowait`, else ``nc.publish``."""
    if not publish_nowait(nc, subject, payload, reply, headers):
        await nc.publish(subject, payload, reply=reply, headers=headers)
