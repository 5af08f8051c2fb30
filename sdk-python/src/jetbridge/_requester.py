"""Many requests in flight over one inbox subscription.

nats-py's ``request()`` wraps every request in ``asyncio.wait_for``, which creates a task per request; at
thousands of requests a second that is most of the cost. A :class:`Requester` keeps one wildcard subscription
and a future per token instead. Timeouts share one timer: requests with the same timeout expire in the order they
were sent, so each timeout value keeps a FIFO of (deadline, token), and one ``call_at`` for the earliest head fails
every request whose time is up (a ``call_later`` per request was 9 % of the dispatcher's CPU). Entries of answered
requests stay until their deadline passes (cheaper than removing them); their token no longer maps to a future.
Replies whose token is unknown (late replies to requests that timed out) go to ``on_stale`` rather than vanishing,
which is how the dispatcher spots stale replies.

The inbox is a lane of the fast read path (:mod:`._fastread`): a reply resolves its future inside the read loop,
without a queue or a task switch; requests are queued without awaiting the publish (:mod:`._fastwrite`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ._fastread import drop_lane, subscribe_lane
from ._fastwrite import publish_nowait

StaleHandler = Callable[[str, Msg], Awaitable[None] | None]

#: deadlines this close together share one timer callback (seconds): a timeout fires at most this late
SWEEP_SLACK = 0.01
#: timeouts longer than this (attempt budgets) get a timer of their own: a FIFO entry would be kept that long
FIFO_MAX_TIMEOUT = 10.0
#: distinct timeout values that get a FIFO; others get a timer of their own
FIFO_MAX_KINDS = 8


class Requester:
    """Send requests and await their replies, matched by a token in the reply subject."""

    def __init__(self, nc: Client, *, prefix: str | None = None, on_stale: StaleHandler | None = None) -> None:
        self._nc = nc
        self.prefix = prefix or nc.new_inbox()
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        self._counter = itertools.count(1)
        self._sub: Subscription | None = None
        self._on_stale = on_stale
        #: timeout -> (deadline, token) of the requests sent with it, oldest first
        self._fifos: dict[float, deque[tuple[float, str]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await subscribe_lane(self._nc, f"{self.prefix}.*", self._on_reply)

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            drop_lane(self._nc, sub)
            await sub.unsubscribe()
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()
        self._fifos.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")

    def new_token(self) -> str:
        return format(next(self._counter), "x")

    def reply_subject(self, token: str) -> str:
        return f"{self.prefix}.{token}"

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def request(
        self, subject: str, data: bytes, *, headers: dict[str, str] | None = None, timeout: float | None = 5.0,
        token: str | None = None,
    ) -> Msg:
        """Send ``data`` to ``subject`` and wait for one reply.

        ``timeout=None``: no timer; the caller ends the wait (:meth:`abort`), as the dispatcher's attempt watchdog does.

        Raises ``nats.errors.NoRespondersError`` when nobody subscribes, ``nats.errors.TimeoutError`` on timeout.
        """
        if self._sub is None:
            await self.start()
        token = token or self.new_token()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = future
        timer = self._expire_after(loop, max(timeout, 0.0), token) if timeout is not None else None
        try:
            reply = f"{self.prefix}.{token}"
            if not publish_nowait(self._nc, subject, data, reply, headers):
                await self._nc.publish(subject, data, reply=reply, headers=headers)
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            if self._pending.get(token) is future:
                del self._pending[token]

    def send(self, subject: str, data: bytes, *, headers: dict[str, str] | None = None,
             timeout: float = 5.0) -> asyncio.Future[Msg] | None:
        """Send a request without awaiting anything; its reply (or a timeout) resolves the returned future.

        For pipelines that send many requests and then gather the replies: a future per request, and no coroutine
        or task. None when the publish could not be queued at once (not connected, a full buffer): use
        :meth:`request`. :meth:`start` must have been awaited.
        """
        token = self.new_token()
        if self._sub is None or not publish_nowait(self._nc, subject, data, f"{self.prefix}.{token}", headers):
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = future
        self._expire_after(loop, max(timeout, 0.0), token)
        return future

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

    def _expire_after(self, loop: asyncio.AbstractEventLoop, timeout: float, token: str) -> asyncio.TimerHandle | None:
        """Fail ``token`` after ``timeout``: through the shared FIFO timer, or (long or unusual timeouts) its own."""
        fifo = self._fifos.get(timeout)
        if fifo is None:
            if timeout > FIFO_MAX_TIMEOUT or len(self._fifos) >= FIFO_MAX_KINDS:
                return loop.call_later(timeout, self._expire, token)
            fifo = self._fifos[timeout] = deque()
        deadline = loop.time() + timeout
        fifo.append((deadline, token))
        if deadline < self._timer_at:
            self._arm(loop, deadline)
        return None

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = loop.call_at(deadline + SWEEP_SLACK, self._sweep)

    def _sweep(self) -> None:
        """Fail every FIFO request whose deadline has passed, then wait for the next deadline."""
        self._timer, self._timer_at = None, float("inf")
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest = float("inf")
        for timeout, fifo in list(self._fifos.items()):
            while fifo and fifo[0][0] <= now:
                self._expire(fifo.popleft()[1])
            if fifo:
                earliest = min(earliest, fifo[0][0])
            else:
                del self._fifos[timeout]  # an unusual timeout does not keep its slot
        if earliest != float("inf"):
            self._arm(loop, earliest)

    def _expire(self, token: str) -> None:
        future = self._pending.pop(token, None)
        if future is not None and not future.done():
            future.set_exception(nats.errors.TimeoutError())

    def _on_reply(self, msg: Msg) -> None:
        """A reply, in the read loop (a lane): resolve its request's future."""
        token = msg.subject[len(self.prefix) + 1:]
        future = self._pending.pop(token, None)
        if future is None or future.done():
            if self._on_stale is not None:
                result = self._on_stale(token, msg)
                if result is not None:
                    asyncio.ensure_future(result)
            return
        headers = msg.headers
        if headers and headers.get("Status") == "503" and not msg.data:
            future.set_exception(nats.errors.NoRespondersError())
        else:
            future.set_result(msg)
