"""One attempt's heartbeats, from receipt to reply, and the 1.1 self-fencing rule (SPEC §5.1, §5.2).

Why a class of its own: the heartbeat clock starts when the request is *received*, not when a worker picks it up,
so heartbeats run beside the wait for a concurrency slot as well as beside the handler; and with ``heartbeat_ack``
the same loop decides when the attempt is fenced. The fencing rule itself is the pure function :func:`fenced`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import nats.errors
import structlog
from nats.aio.client import Client

from . import _protocol as proto
from ._timeutil import parse_ns

log = structlog.get_logger("jetbridge.service")

#: the heartbeat timeout is this many intervals (SPEC §5.1)
TIMEOUT_INTERVALS = 3
#: the first heartbeat is due at most this long after receipt (SPEC §5.1): short attempts send none
FIRST_HEARTBEAT_DELAY = 0.25


def fenced(now: float, acked_at: float, interval: float) -> bool:
    """Whether an attempt whose newest acked heartbeat was *sent* at ``acked_at`` is lost (SPEC §5.2)."""
    return now - acked_at >= TIMEOUT_INTERVALS * interval


class Heartbeats:
    """Sends an attempt's heartbeats: plain publishes (1.0), or requests that must be acked (``heartbeat_ack``).

    ``on_lost`` is called once, when the attempt is fenced: a heartbeat got "no responders", or no heartbeat sent
    in the last heartbeat timeout was acked. Only with ``heartbeat_ack``: a 1.0 dispatcher never acks.
    """

    def __init__(self, nc: Client, request: proto.TaskRequest, on_lost: Callable[[], None]) -> None:
        self._nc = nc
        self._request_msg = request
        self._interval = request.heartbeat_interval_ms / 1000
        self._ack = request.heartbeat_ack and request.heartbeat_interval_ms > 0
        self._on_lost = on_lost
        self._lock = anyio.Lock()  # at most one heartbeat request outstanding per attempt
        self._pending: tuple[float | None, str | None] | None = None  # progress to send once the lock is free
        self._tg: Any = None  # where explicit heartbeats are sent from, so that the handler never waits for an ack
        self.acked_at = time.monotonic()  # receipt: the clock starts here
        self.lost = False

    @property
    def enabled(self) -> bool:
        return self._interval > 0

    def attach(self, tg: Any) -> None:
        """Send explicit heartbeats from ``tg`` (the attempt's task group) instead of the handler's own task."""
        self._tg = tg

    async def send(self, progress: float | None = None, message: str | None = None) -> None:
        """An explicit heartbeat. With acks it never blocks the handler: it is sent in the background, or, while
        another heartbeat request is outstanding, right after that one (the newest progress wins)."""
        if not self._ack or self._tg is None:
            await self.beat(progress, message)
        elif self._lock.locked():
            self._pending = (progress, message)
        else:
            self._tg.start_soon(self.beat, progress, message)

    async def run(self) -> None:
        """Heartbeat from receipt until cancelled: the first ``min(250 ms, interval)`` after receipt (an attempt
        that replies sooner sends none), then every interval; fence if acks stop.

        Started at receipt, before the request waits for a worker, so a waiting request is heartbeated too.
        """
        if self._interval <= 0:
            return
        async with anyio.create_task_group() as tg:
            if self._ack:
                tg.start_soon(self._watchdog)
            await anyio.sleep(max(0.0, self.acked_at + min(FIRST_HEARTBEAT_DELAY, self._interval) - time.monotonic()))
            while not self.lost:
                if not self._lock.locked():  # a periodic beat due while one is outstanding is skipped
                    tg.start_soon(self.beat)
                await anyio.sleep(self._interval)
            tg.cancel_scope.cancel()

    async def beat(self, progress: float | None = None, message: str | None = None) -> None:
        """One heartbeat; never raises (a disconnected client simply misses the ack)."""
        body = proto.encode_heartbeat(self._request_msg.task_id, self._request_msg.attempt_token, progress, message)
        subject = self._request_msg.heartbeat_subject
        if not self._ack:
            try:
                await self._nc.publish(subject, body)
            except Exception:  # noqa: BLE001 - reconnecting: the next beat may get through
                pass
            return
        async with self._lock:
            await self._request(subject, body)
            while self._pending is not None and not self.lost:  # progress that came in meanwhile
                progress, message = self._pending
                self._pending = None
                await self._request(subject, proto.encode_heartbeat(
                    self._request_msg.task_id, self._request_msg.attempt_token, progress, message))

    async def _request(self, subject: str, body: bytes) -> bool:
        """One heartbeat request; True when it was acknowledged."""
        sent = time.monotonic()
        try:
            await self._nc.request(subject, body, timeout=self._interval)
        except nats.errors.NoRespondersError:
            self._fence("no responders on the heartbeat subject")
            return False
        except Exception:  # noqa: BLE001 - a timeout or a reconnect is just a missing ack
            return False
        self.acked_at = max(self.acked_at, sent)
        return True

    def is_late(self, now_ns: int) -> bool:
        """SPEC §5.2: received more than a heartbeat timeout after it was sent (``attempt_deadline − budget_ms``),
        by this machine's wall clock. The dispatcher may have given such a request up already."""
        if not self._ack:
            return False
        request = self._request_msg
        sent_ns = parse_ns(request.attempt_deadline) - request.budget_ms * 1_000_000
        return now_ns - sent_ns > TIMEOUT_INTERVALS * request.heartbeat_interval_ms * 1_000_000

    async def confirm(self) -> bool:
        """Before a late request starts: a heartbeat now, which must be acknowledged, else the attempt is fenced."""
        body = proto.encode_heartbeat(self._request_msg.task_id, self._request_msg.attempt_token)
        async with self._lock:
            acked = await self._request(self._request_msg.heartbeat_subject, body)
        if not acked:
            self._fence("the first heartbeat of a late request was not acknowledged")
        return acked

    async def _watchdog(self) -> None:
        """Fence the moment the newest ack is a heartbeat timeout old, not at the next beat."""
        while not self.lost:
            now = time.monotonic()
            if fenced(now, self.acked_at, self._interval):
                self._fence("no heartbeat acknowledged within the heartbeat timeout")
                return
            await anyio.sleep(self.acked_at + TIMEOUT_INTERVALS * self._interval - now)

    def _fence(self, why: str) -> None:
        if self.lost:
            return
        self.lost = True
        log.warning("attempt_fenced", task_id=self._request_msg.task_id, type=self._request_msg.task_type,
                    queue=self._request_msg.queue, attempt=self._request_msg.attempt, reason=why)
        self._on_lost()
