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
from typing import Any

from nats.aio.client import Client

CONNECTED = Client.CONNECTED

#: what nats-py's ``publish`` refuses in a subject (``_SUBJECT_INVALID_RE``)
_BAD_SUBJECT = re.compile(r"[ \t\r\n]")
#: header names nats-py accepts (``_HEADER_KEY_RE``); anything else goes through ``publish``, which raises
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


#: header names seen -> the name as written (stripped), or None where ``publish`` would refuse it; names repeat
_NAMES: dict[str, str | None] = {}
_NAMES_MAX = 1024


def _checked_name(name: str) -> str | None:
    key = name.strip()
    checked = key if _HEADER_NAME.fullmatch(key) else None
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = checked
    return checked


def _header_block(headers: dict[str, str]) -> bytes | None:
    """``NATS/1.0`` and the header lines as ``publish`` writes them, or None if ``publish`` would refuse them."""
    lines = ["NATS/1.0\r\n"]
    names = _NAMES
    for name, value in headers.items():
        key = names[name] if name in names else _checked_name(name)
        if key is None:
            if not name.strip():
                continue  # publish() skips an empty name
            return None  # publish() raises for a bad name: let it
        if "\r" in value or "\n" in value:
            return None  # publish() rewrites line breaks: let it
        lines.append(f"{key}: {value.strip()}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


def publish_nowait(nc: Client, subject: str, payload: bytes, reply: str = "",
                   headers: dict[str, str] | None = None) -> bool:
    """Queue a core publish without awaiting; False when it could not be done this way (use ``nc.publish``)."""
    client: Any = nc
    if client._status != CONNECTED or len(payload) > client._max_payload or not subject \
            or _BAD_SUBJECT.search(subject) or (reply and _BAD_SUBJECT.search(reply)):
        return False  # closed, reconnecting or draining, or what publish() refuses: let it
    if headers is None:
        cmd = b"".join((f"PUB {subject} {reply} {len(payload)}\r\n".encode(), payload, b"\r\n"))
    else:
        block = _header_block(headers)
        if block is None:
            return False
        cmd = b"".join((f"HPUB {subject} {reply} {len(block)} {len(block) + len(payload)}\r\n".encode(),
                        block, payload, b"\r\n"))
    if not _queue(client, cmd):
        return False
    stats = client.stats
    stats["out_msgs"] += 1
    stats["out_bytes"] += len(payload)
    return True


def command_nowait(nc: Client, cmd: bytes) -> bool:
    """Queue a protocol command (``SUB``, ``UNSUB``) as ``_send_command`` and ``_flush_pending`` would, without
    awaiting; False when not connected or the buffer is full (use nats-py's own call)."""
    client: Any = nc
    return client._status == CONNECTED and _queue(client, cmd)


def _queue(client: Any, cmd: bytes) -> bool:
    """Append ``cmd`` to the client's outgoing buffer and wake its flusher, unless that would force a flush."""
    size = client._pending_data_size + len(cmd)
    if 0 < client._max_pending_size < size:
        return False  # publish() forces a flush here
    client._pending.append(cmd)
    client._pending_data_size = size
    queue = client._flush_queue
    if queue is not None and queue.empty():
        queue.put_nowait(asyncio.get_running_loop().create_future())  # the flusher resolves it after writing
    return True


async def publish(nc: Client, subject: str, payload: bytes, reply: str = "",
                  headers: dict[str, str] | None = None) -> None:
    """:func:`publish_nowait`, else ``nc.publish``."""
    if not publish_nowait(nc, subject, payload, reply, headers):
        await nc.publish(subject, payload, reply=reply, headers=headers)
