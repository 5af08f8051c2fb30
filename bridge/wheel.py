"""One event-loop timer for every running attempt's watchdog: a timer wheel.

``loop.call_later`` per attempt builds a handle, pushes it on the loop's heap (a Python ``__lt__`` per comparison,
about ten at a thousand attempts in flight) and leaves a cancelled handle behind when the attempt ends first, which
is nearly always. Here a due time is rounded down to a slot of ``tick`` seconds; a slot is a dict of key ->
callback, so arming is a dict store and disarming a dict pop, and only the earliest slot holds a loop timer.

A callback may so run up to ``tick`` early, never late (but for the loop's own delays). Callers look at the clock
and arm again for what is left; a delay shorter than a tick gets a loop timer of its own, so that second arming
ends exactly on time.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Hashable


class TimerWheel:
    """Callbacks by key, each run once near its due time (see the module) unless removed first."""

    def __init__(self, tick: float = 0.01) -> None:
        self.tick = tick
        self._slots: dict[int, dict[Hashable, Callable[[], object]]] = {}
        self._order: list[int] = []  # slot numbers with a dict in _slots, earliest first (a heap)
        self._where: dict[Hashable, int] = {}  # key -> its slot number
        self._own: dict[Hashable, asyncio.TimerHandle] = {}  # key -> the loop timer of a short delay
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None

    def __len__(self) -> int:
        return len(self._where) + len(self._own)

    def add(self, key: Hashable, delay: float, callback: Callable[[], object]) -> None:
        """Run ``callback`` about ``delay`` seconds from now, instead of what ``key`` had armed."""
        self.remove(key)
        loop = asyncio.get_running_loop()
        if delay < self.tick:
            self._own[key] = loop.call_later(delay, self._run_own, key, callback)
            return
        number = int((loop.time() + delay) // self.tick)
        slot = self._slots.get(number)
        if slot is None:
            slot = self._slots[number] = {}
            heapq.heappush(self._order, number)
            if self._timer_slot is None or number < self._timer_slot:
                self._arm(loop, number)
        slot[key] = callback
        self._where[key] = number

    def remove(self, key: Hashable) -> None:
        number = self._where.pop(key, None)
        if number is not None:
            slot = self._slots.get(number)
            if slot is not None:  # else its slot is being run: _fire skips a key no longer in _where
                slot.pop(key, None)
        elif (own := self._own.pop(key, None)) is not None:
            own.cancel()

    def close(self) -> None:
        """Forget every callback."""
        if self._timer is not None:
            self._timer.cancel()
        for own in self._own.values():
            own.cancel()
        self._timer = self._timer_slot = None
        self._slots.clear()
        self._order.clear()
        self._where.clear()
        self._own.clear()

    def _run_own(self, key: Hashable, callback: Callable[[], object]) -> None:
        del self._own[key]
        callback()

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
        order, slots, where = self._order, self._slots, self._where
        while order and order[0] * self.tick <= now:
            number = heapq.heappop(order)
            for key, callback in slots.pop(number).items():  # a callback's add() never lands in this slot
                if where.get(key) == number:  # not removed (or armed again) by an earlier callback
                    del where[key]
                    try:
                        callback()
                    except Exception as exc:  # noqa: BLE001 - one failing watchdog must not stop the others
                        loop.call_exception_handler({"message": "timer wheel callback failed", "exception": exc})
        while order and not slots[order[0]]:  # slots emptied by remove(): no timer for them
            del slots[heapq.heappop(order)]
        if order:
            self._arm(loop, order[0])
