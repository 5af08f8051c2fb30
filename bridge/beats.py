"""Per-attempt heartbeat subscriptions that share one callback task.

Each running attempt needs the server to deliver heartbeats for its own subject only, so that a flood of forged
heartbeats for other tokens is dropped by the server at no cost to the dispatcher (see :mod:`bridge.attempts`).
``nats-py``'s ``subscribe()`` gives every subscription its own queue and asyncio task, which costs more per attempt
than the rest of the attempt's bookkeeping. Here each attempt gets a real server-side subscription (its own ``sid``
and subject, so a reconnect re-subscribes it like any other) whose messages go into the queue of one shared
subscription, read by one task.

The ``SUB`` and ``UNSUB`` commands are queued without awaiting (``jetbridge.internal.command_nowait``), as a
publish is. This leans on three internals of the pinned nats-py 2.16 (``Client._sid``, ``Client._subs`` and
``Client._send_subscribe``/``_send_unsubscribe``, and ``Subscription._pending_queue``); the heartbeat tests fail
loudly if a new version changes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from jetbridge.internal import command_nowait
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.protocol.command import sub_cmd, unsub_cmd

_UNLIMITED = 0  # nats-py: a pending bytes limit of 0 disables the check


class SharedSubscriptions:
    """Subscribe to many subjects, one at a time, with one callback task for all of them."""

    def __init__(self, nc: Client, anchor_subject: str, on_message: Callable[[Msg], Awaitable[None]]) -> None:
        self._nc = nc
        self._anchor_subject = anchor_subject
        self._on_message = on_message
        self._anchor: Subscription | None = None

    async def start(self) -> None:
        """Subscribe the anchor: a subject nobody publishes to, whose queue and task serve every subject added."""
        self._anchor = await self._nc.subscribe(self._anchor_subject, cb=self._on_message,
                                                pending_msgs_limit=1_000_000, pending_bytes_limit=_UNLIMITED)

    async def close(self) -> None:
        if self._anchor is not None:
            try:
                await self._anchor.unsubscribe()
            except Exception:  # noqa: BLE001 - a closed connection has nothing left to unsubscribe
                pass
            self._anchor = None

    async def add(self, subject: str) -> int:
        """Start delivering ``subject``'s messages to the shared callback; returns the handle for :meth:`remove`."""
        assert self._anchor is not None, "start() first"
        nc = self._nc
        nc._sid += 1
        sid = nc._sid
        sub = Subscription(nc, sid, subject, pending_bytes_limit=_UNLIMITED)
        sub._pending_queue = self._anchor._pending_queue
        nc._subs[sid] = sub
        if not command_nowait(nc, sub_cmd(subject, "", sid)):
            await nc._send_subscribe(sub)
        return sid

    async def remove(self, sid: int) -> None:
        """Stop delivering a subject added with :meth:`add`."""
        nc = self._nc
        nc._remove_sub(sid)
        if nc.is_connected and not command_nowait(nc, unsub_cmd(sid, 0)):
            try:
                await nc._send_unsubscribe(sid)
            except Exception:  # noqa: BLE001 - reconnecting: the server forgets the subscription anyway
                pass
