"""Many requests in flight over one inbox subscription.

nats-py's ``request()`` wraps every request in ``asyncio.wait_for``, which creates a task per request; at
thousands of requests a second that is most of the cost. A :class:`Requester` keeps one wildcard subscription,
a future per token and a ``call_later`` timer instead. Replies whose token is unknown (late replies to requests
that timed out) go to ``on_stale`` rather than vanishing, which is how the dispatcher spots stale replies.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

StaleHandler = Callable[[str, Msg], Awaitable[None] | None]


class Requester:
    """Send requests and await their replies, matched by a token in the reply subject."""

    def __init__(self, nc: Client, *, prefix: str | None = None, on_stale: StaleHandler | None = None) -> None:
        self._nc = nc
        self.prefix = prefix or nc.new_inbox()
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        self._counter = itertools.count(1)
        self._sub: Subscription | None = None
        self._on_stale = on_stale

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self._nc.subscribe(f"{self.prefix}.*", cb=self._on_reply,
                                                 pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()

    def new_token(self) -> str:
        return format(next(self._counter), "x")

    def reply_subject(self, token: str) -> str:
        return f"{self.prefix}.{token}"

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def request(
        self, subject: str, data: bytes, *, headers: dict[str, str] | None = None, timeout: float = 5.0,
        token: str | None = None,
    ) -> Msg:
        """Send ``data`` to ``subject`` and wait for one reply.

        Raises ``nats.errors.NoRespondersError`` when nobody subscribes, ``nats.errors.TimeoutError`` on timeout.
        """
        if self._sub is None:
            await self.start()
        token = token or self.new_token()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = future
        timer = loop.call_later(max(timeout, 0.0), self._expire, token)
        try:
            await self._nc.publish(subject, data, reply=f"{self.prefix}.{token}", headers=headers)
            return await future
        finally:
            timer.cancel()
            self._pending.pop(token, None)

    def forget(self, token: str) -> None:
        """Stop waiting for ``token``; a reply that still comes is stale."""
        future = self._pending.pop(token, None)
        if future is not None and not future.done():
            future.cancel()

    def abort(self, token: str, exc: BaseException) -> bool:
        """Fail the pending request ``token`` with ``exc``; a reply that still comes is stale."""
        future = self._pending.pop(token, None)
        if future is None or future.done():
            return False
        future.set_exception(exc)
        return True

    def _expire(self, token: str) -> None:
        future = self._pending.pop(token, None)
        if future is not None and not future.done():
            future.set_exception(nats.errors.TimeoutError())

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self.prefix) + 1:]
        future = self._pending.pop(token, None)
        if future is None or future.done():
            if self._on_stale is not None:
                result = self._on_stale(token, msg)
                if result is not None:
                    await result
            return
        headers = msg.headers
        if headers and headers.get("Status") == "503" and not msg.data:
            future.set_exception(nats.errors.NoRespondersError())
        else:
            future.set_result(msg)
