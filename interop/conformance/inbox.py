"""Every JSON message on one NATS subject, kept with its arrival time, so a case can await the one it needs.

Cases synchronise on what the system says happened (a handler's ``started`` event, a task's state event) rather
than on sleeps. An :class:`Inbox` subscribes before the case acts, so nothing is missed between the action and
the wait, and keeps everything, so a wait for something that already arrived returns at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .registry import CaseFailure


@dataclass(frozen=True)
class Received:
    """One message: its JSON object body and when it arrived (``anyio.current_time()``, monotonic)."""

    at: float
    subject: str
    body: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default)


class Inbox:
    """Subscribes to ``subject`` (wildcards allowed) and records every JSON object published there."""

    def __init__(self, nc: Client, subject: str) -> None:
        self._nc = nc
        self.subject = subject
        self.messages: list[Received] = []
        self._changed = anyio.Event()
        self._sub: Subscription | None = None

    async def start(self) -> Inbox:
        self._sub = await self._nc.subscribe(self.subject, cb=self._on_msg, pending_msgs_limit=1_000_000)
        await self._nc.flush()  # the server has the subscription before any case acts
        return self

    async def stop(self) -> None:
        if self._sub is not None and self._nc.is_connected:
            await self._sub.unsubscribe()
        self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        """Keep JSON objects; anything else can match no wait, so a handler that sends it fails the case that
        waits for its event, with a "not seen" reason."""
        try:
            body = json.loads(msg.data)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        self.messages.append(Received(anyio.current_time(), msg.subject, body))
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def matching(self, where: Callable[[Received], bool] | None = None, **fields: Any) -> list[Received]:
        """Messages, in arrival order, whose body has every ``fields`` value and that satisfy ``where``."""
        return [m for m in self.messages
                if all(m.body.get(k) == v for k, v in fields.items()) and (where is None or where(m))]

    async def wait_until(self, condition: Callable[[], bool], *, what: str, timeout: float) -> None:
        """Return once ``condition()`` holds, checking again whenever a message arrives."""
        with anyio.move_on_after(timeout):
            while True:
                changed = self._changed
                if condition():
                    return
                await changed.wait()
        raise CaseFailure(f"{what}: not seen within {timeout:g}s")

    async def wait_for(self, what: str, *, timeout: float, where: Callable[[Received], bool] | None = None,
                       **fields: Any) -> Received:
        """The first message matching ``fields`` and ``where``, waiting up to ``timeout`` seconds for it."""
        await self.wait_until(lambda: bool(self.matching(where, **fields)), what=what, timeout=timeout)
        return self.matching(where, **fields)[0]
