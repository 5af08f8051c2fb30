"""One attempt's heartbeats, from receipt to reply, and the 1.1 self-fencing rule (SPEC §5.1, §5.2).

Why a class of its own: the heartbeat clock starts when the request is *received*, not when a worker picks it up,
so heartbeats run beside the wait for a concurrency slot as well as beside the handler; and with ``heartbeat_ack``
the same loop decides when the attempt is fenced. The fencing rule itself is the pure function :func:`fenced`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import nats.errors
import structlog
from nats.aio.client import Client

from . import _protocol as proto

log = structlog.get_logger("jetbridge.service")

#: the heartbeat timeout is this many intervals (SPEC §5.1)
TIMEOUT_INTERVALS = 3


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
        self._request = request
        self._interval = request.heartbeat_interval_ms / 1000
        self._ack = request.heartbeat_ack and request.heartbeat_interval_ms > 0
        self._on_lost = on_lost
        self._lock = anyio.Lock()  # at most one heartbeat request outstanding per attempt
        self.acked_at = time.monotonic()  # receipt: the clock starts here
        self.lost = False

    @property
    def enabled(self) -> bool:
        return self._interval > 0

    async def run(self) -> None:
        """Heartbeat every interval after the receipt heartbeat, until cancelled; fence if acks stop.

        The caller starts the receipt heartbeat (:meth:`beat`) itself, before this and before it waits for a
        worker, so that its PUB is written before anything of the handler's.
        """
        if self._interval <= 0:
            return
        async with anyio.create_task_group() as tg:
            if self._ack:
                tg.start_soon(self._watchdog)
            while not self.lost:
                await anyio.sleep(self._interval)
                if not self._lock.locked():  # a periodic beat due while one is outstanding is skipped
                    tg.start_soon(self.beat)
            tg.cancel_scope.cancel()

    async def beat(self, progress: float | None = None, message: str | None = None) -> None:
        """One heartbeat; never raises (a disconnected client simply misses the ack)."""
        body = proto.encode_heartbeat(self._request.task_id, self._request.attempt_token, progress, message)
        subject = self._request.heartbeat_subject
        if not self._ack:
            try:
                await self._nc.publish(subject, body)
            except Exception:  # noqa: BLE001 - reconnecting: the next beat may get through
                pass
            return
        async with self._lock:
            sent = time.monotonic()
            try:
                await self._nc.request(subject, body, timeout=self._interval)
            except nats.errors.NoRespondersError:
                self._fence("no responders on the heartbeat subject")
                return
            except Exception:  # noqa: BLE001 - a timeout or a reconnect is just a missing ack
                return
            self.acked_at = max(self.acked_at, sent)

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
        log.warning("attempt_fenced", task_id=self._request.task_id, type=self._request.task_type,
                    queue=self._request.queue, attempt=self._request.attempt, reason=why)
        self._on_lost()
