"""A continuous pull from a JetStream consumer, sized by free concurrency slots.

nats-py's ``fetch()`` spends an asyncio task and a ``wait_for`` per message, which caps one subscription at about
9k messages/s on this class of machine. This puller sends raw pull requests (``CONSUMER.MSG.NEXT``) to an inbox
with a callback, keeps exactly one pull outstanding, and asks for as many messages as there are free slots, so
messages arrive straight into the dispatcher and the server's ``max_ack_pending`` stays the queue-wide limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec
import structlog
from jetbridge.internal import drop_lane, subscribe_lane
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = structlog.get_logger("jetbridge.puller")

MessageHandler = Callable[[Msg], None]
NS = 1_000_000_000


class Puller:
    """Pulls messages for one consumer while ``free_slots()`` is positive and hands each to ``on_message``.

    ``on_message`` runs inside the subscription callback: it must only schedule work, never await it.
    """

    def __init__(
        self, nc: Client, stream: str, consumer: str, on_message: MessageHandler, free_slots: Callable[[], int],
        *, max_batch: int = 256, expires: float = 5.0,
    ) -> None:
        self._nc = nc
        self._stream = stream
        self._consumer = consumer
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._on_message = on_message
        self._free_slots = free_slots
        self._max_batch = max_batch
        self._expires = expires
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._outstanding = 0  # messages asked for by the current pull and not yet delivered
        self._pull_id = 0
        self._wake = asyncio.Event()
        self._stopped = False
        self.last_error: str | None = None
        #: pulls in a row that ended in an error status (no responders while a consumer has no leader, a deleted
        #: consumer...): the next pull waits a growing backoff instead of spinning against the server
        self.failures = 0
        self._max_backoff = min(2.0, expires)
        #: the server sends an idle heartbeat this often while a pull waits; a pull that goes silent for a few of
        #: them is gone (the server restarted or failed over and dropped it) and is replaced at once
        self._heartbeat = min(1.0, expires / 4)
        self._last_seen = 0.0
        self._pull_subject = ""

    async def run(self) -> None:
        """Pull until :meth:`stop`; returns after the last pull is abandoned."""
        self._sub = await subscribe_lane(self._nc, f"{self._inbox}.*", self._on_msg)
        try:
            while not self._stopped:
                if self.failures and self._outstanding == 0:
                    await asyncio.sleep(min(self._max_backoff, 0.05 * 2 ** min(self.failures, 8)))
                    if self._stopped:
                        break
                free = self._free_slots()
                if self._outstanding == 0 and free > 0 and self._nc.is_connected:
                    await self._pull(min(free, self._max_batch))
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._heartbeat)
                except TimeoutError:
                    if self._outstanding and time.monotonic() - self._last_seen > 3 * self._heartbeat:
                        # No message, status or heartbeat for the pull (connection lost, server restarted): start over.
                        self._outstanding = 0
        finally:
            sub, self._sub = self._sub, None
            if sub is not None:
                drop_lane(self._nc, sub)
                if self._nc.is_connected:
                    await sub.unsubscribe()

    def poke(self) -> None:
        """A slot was freed: maybe pull more."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def _pull(self, batch: int) -> None:
        self._pull_id += 1
        self._outstanding = batch
        self._last_seen = time.monotonic()
        self._pull_subject = f"{self._inbox}.{self._pull_id}"
        request = msgspec.json.encode({"batch": batch, "expires": int(self._expires * NS),
                                       "idle_heartbeat": int(self._heartbeat * NS)})
        try:
            await self._nc.publish(self._next_subject, request, reply=self._pull_subject)
        except Exception as exc:  # noqa: BLE001 - reconnecting or closed: try again on the next turn
            self._outstanding = 0
            self.last_error = str(exc)

    def _on_msg(self, msg: Msg) -> None:
        """A delivery or a status of our pull, in the read loop (a lane of ``jetbridge.internal.subscribe_lane``)."""
        headers = msg.headers
        if msg.subject == self._pull_subject:
            self._last_seen = time.monotonic()
        if headers and "Status" in headers and not msg.reply:
            self._on_status(msg, headers)
            return
        self.failures = 0
        self._outstanding = max(0, self._outstanding - 1)
        if self._outstanding == 0:
            self._wake.set()
        self._on_message(msg)

    def _on_status(self, msg: Msg, headers: dict[str, str]) -> None:
        status = headers.get("Status", "")
        if status == "100":  # idle heartbeat
            return
        if msg.subject != self._pull_subject:
            return  # the end of an older pull
        if status in ("404", "408", "409"):
            self.failures = 0
        else:
            self.failures += 1
            self.last_error = f"pull failed: {status} {headers.get('Description', '')}"
            if self.failures == 1 or self.failures % 30 == 0:
                log.warning("pull_failed", stream=self._stream, consumer=self._consumer, status=status,
                            description=headers.get("Description", "").strip(), failures_in_a_row=self.failures,
                            hint="the consumer is missing or has no leader (a cluster election?); pulling again "
                                 "with backoff")
        self._outstanding = 0
        self._wake.set()
