"""One event-loop timer for every running attempt's watchdog: a timer wheel.

``loop.call_later`` per attempt builds a handle, pushes it on the loop's heap (a Python ``__lt__`` per comparison,
about ten at a thousand attempts in flight) and leaves a cancelled handle behind when the attempt ends first, which
is nearly always. Here a due time is rounded up to a slot of ``tick`` seconds; a slot is a dict of key -> callback,
so arming is a dict store and disarming a dict pop, and only the earliest slot holds a loop timer. A callback runs
at most ``tick`` late, never early.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Hashable


class TimerWheel:
    """Callbacks by key, each run once at (or up to ``tick`` after) its due time unless removed first."""

    def __init__(self, tick: float = 0.01) -> None:
        self.tick = tick
        self._slots: dict[int, dict[Hashable, Callable[[], object]]] = {}
        self._order: list[int] = []  # slot numbers with a dict in _slots, earliest first (a heap)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots.values())

    def add(self, key: Hashable, delay: float, callback: Callable[[], object]) -> int:
        """Run ``callback`` after ``delay`` seconds; returns the slot, which :meth:`remove` needs. A key is in one
        slot at a time: remove it before adding it again."""
        loop = asyncio.get_running_loop()
        number = math.ceil((loop.time() + max(delay, 0.0)) / self.tick)
        slot = self._slots.get(number)
        if slot is None:
            slot = self._slots[number] = {}
            heapq.heappush(self._order, number)
            if self._timer_slot is None or number < self._timer_slot:
                self._arm(loop, number)
        slot[key] = callback
        return number

    def remove(self, key: Hashable, number: int) -> None:
        slot = self._slots.get(number)
        if slot is not None:
            slot.pop(key, None)

    def close(self) -> None:
        """Forget every callback."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_slot = None
        self._slots.clear()
        self._order.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop, number: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = number
        self._timer = loop.call_at(number * self.tick, self._fire)

    def _fire(self) -> None:
        """Run the callbacks of every slot whose time has come, then wait for the next slot that has any."""
        loop = asyncio.get_running_loop()
        self._timer = self._timer_slot = None
        now = loop.time()
        order, slots = self._order, self._slots
        while order and order[0] * self.tick <= now:
            for callback in slots.pop(heapq.heappop(order)).values():
                callback()
        while order and not slots[order[0]]:  # slots emptied by remove(): no timer for them
            del slots[heapq.heappop(order)]
        if order:
            self._arm(loop, order[0])
