"""A count of running work that a drain can await reaching zero."""

from __future__ import annotations

import anyio


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = anyio.Event()
        self._idle.set()

    def enter(self) -> None:
        if self.count == 0:
            self._idle = anyio.Event()
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once nothing is running (work that starts while waiting is waited for too)."""
        while self.count:
            await self._idle.wait()
