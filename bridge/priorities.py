"""Priorities across queues: one dispatcher serves several queues from one pool of slots.

``jetbridge run --queues CRITICAL:6,DEFAULT:3,LOW:1`` (asynq's notation). Each queue's puller keeps a small buffer
of pulled items (they count against the queue's ``max_ack_pending``, so per-queue ``max_concurrent`` still holds,
and the keeper keeps their ack wait fresh); whenever a pool slot is free, :class:`Chooser` picks the queue whose
buffered item starts next:

- **weighted** (default): smooth weighted round robin among the queues that have an item: under contention the
  starts follow the weights exactly (6:3:1), and a queue with weight 1 still gets its turn (never starved);
- **strict** (``--strict-priority``): the highest queue with an item; a lower queue starts only while every higher
  one is empty. "Empty" is the server's word: each delivered item says how many more are pending, and a higher
  queue whose buffer ran dry but that still has items pending holds the lower ones back until its next item comes
  (at most :data:`REFILL_WAIT`, after which it counts as empty, e.g. when another dispatcher took those items).

The choice is pure (:class:`Chooser`); :class:`PriorityPool` is the bookkeeping around it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable, Set
from typing import TYPE_CHECKING

from jetbridge.internal import ConfigError, names
from nats.aio.msg import Msg

if TYPE_CHECKING:
    from .settings import Settings
    from .worker import QueueWorker

#: how long a strict higher queue with items pending on the server may hold lower queues back while it refills
REFILL_WAIT = 0.5
#: how long lower queues wait (strict) for a higher queue's first pull after the dispatcher starts serving it
STARTUP_WAIT = 2.0
_ITEM_RE = re.compile(r"([^:,\s]+)(?::(\d+))?")


def parse_priorities(text: str) -> list[tuple[str, int]]:
    """``CRITICAL:6,DEFAULT:3,LOW:1`` -> [(queue, weight)]; a queue without a weight has weight 1."""
    found: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",")):
        m = _ITEM_RE.fullmatch(part)
        if not m:
            raise ConfigError(f"--queues: {part!r} is not QUEUE or QUEUE:WEIGHT (e.g. CRITICAL:6,DEFAULT:3,LOW:1)")
        name, weight = m.group(1), int(m.group(2) or 1)
        if not names.is_valid_name(name):
            raise ConfigError(f"--queues: {name!r} is not a valid queue name (letters, digits, '_', '-', ':')")
        if not 1 <= weight <= 1000:
            raise ConfigError(f"--queues: the weight of {name} must be between 1 and 1000, got {weight}")
        if any(name == n for n, _ in found):
            raise ConfigError(f"--queues: {name} is named twice")
        found.append((name, weight))
    return found


class Chooser:
    """Which queue starts next, among those that have an item and a free per-queue slot."""

    def __init__(self, weights: list[tuple[str, int]], *, strict: bool) -> None:
        self.strict = strict
        #: highest priority first (stable for equal weights: the order given)
        self.order = [n for n, _ in sorted(weights, key=lambda nw: -nw[1])]
        self.weights = dict(weights)
        self._current = dict.fromkeys(self.weights, 0)

    def pick(self, ready: Set[str], refilling: Set[str] = frozenset()) -> str | None:
        """The queue to start from; ``ready``: queues with an item that may start; ``refilling``: (strict) queues
        with no item here yet but more pending on the server, which hold lower queues back."""
        if self.strict:
            for name in self.order:
                if name in ready:
                    return name
                if name in refilling:
                    return None
            return None
        if not ready:
            return None
        # A queue that is only refilling (its buffer ran dry, items pending on the server) keeps earning credit,
        # so it catches up once its items arrive and the shares still follow the weights; credit is bounded.
        competing = ready | refilling
        total = sum(self.weights[n] for n in competing)
        bound = total * 16
        for name in competing:
            self._current[name] = min(bound, self._current[name] + self.weights[name])
        best = max(ready, key=lambda n: (self._current[n], self.weights[n]))
        self._current[best] = max(-bound, self._current[best] - total)
        return best


class PriorityPool:
    """The shared slots of a dispatcher serving queues by priority, and each queue's buffer of pulled items."""

    def __init__(self, size: int, weights: list[tuple[str, int]], *, strict: bool,
                 start: Callable[[QueueWorker, Msg], None]) -> None:
        self.size = size
        self.chooser = Chooser(weights, strict=strict)
        self._start = start
        self.workers: dict[str, QueueWorker] = {}
        self.buffers: dict[str, deque[Msg]] = {}
        self.running: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._last_item: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def attach(self, worker: QueueWorker) -> None:
        self.workers[worker.name] = worker
        self.buffers.setdefault(worker.name, deque())
        self.running.setdefault(worker.name, 0)
        # Not heard from yet: it may have items, so (strict) lower queues wait for its first pull, at most
        # STARTUP_WAIT (a first pull on a busy machine takes longer than a refill).
        self._pending.setdefault(worker.name, 1)
        self._last_item.setdefault(worker.name, time.monotonic() + STARTUP_WAIT - REFILL_WAIT)
        worker.pool = self

    def free_for(self, worker: QueueWorker) -> int:
        """How many more items the queue's puller may fetch: its buffer's room, within the queue's own capacity."""
        room = max(2 * self.size, 16) - len(self.buffers[worker.name])
        return min(room, worker.free_slots())

    def offer(self, worker: QueueWorker, msg: Msg) -> None:
        """A pulled item: buffered (kept alive like any item in progress) until a slot is chosen for it."""
        assert msg.reply
        worker.inflight[msg.reply] = time.monotonic()
        self.buffers[worker.name].append(msg)
        try:
            self._pending[worker.name] = msg.metadata.num_pending
        except Exception:  # noqa: BLE001 - not a JetStream reply subject: assume more may come
            self._pending[worker.name] = 1
        self._last_item[worker.name] = time.monotonic()
        self.kick()

    def done(self, worker: QueueWorker) -> None:
        """An item started from here has been dealt with: its slot is free."""
        self.running[worker.name] -= 1
        self.kick()

    def _busy(self) -> int:
        return sum(self.running.values()) - sum(w.waiting for w in self.workers.values())

    def kick(self) -> None:
        """Start buffered items while slots are free, in the chooser's order."""
        while self._busy() < self.size:
            now = time.monotonic()
            ready = {n for n, buf in self.buffers.items()
                     if buf and self.running[n] - self.workers[n].waiting < self.workers[n].capacity}
            refilling = {n for n, buf in self.buffers.items() if not buf and self._pending.get(n, 0) > 0
                         and now - self._last_item.get(n, 0.0) < REFILL_WAIT}
            name = self.chooser.pick(ready, refilling)
            if name is None:
                if ready and refilling:
                    self._kick_later()
                return
            worker = self.workers[name]
            msg = self.buffers[name].popleft()
            worker.inflight.pop(msg.reply or "", None)  # _on_item puts it back, counted as running
            self.running[name] += 1
            self._start(worker, msg)

    def _kick_later(self) -> None:
        if self._timer is None or self._timer.cancelled():
            def fire() -> None:
                self._timer = None
                self.kick()

            self._timer = asyncio.get_running_loop().call_later(REFILL_WAIT, fire)

    def drop(self, worker: QueueWorker) -> list[Msg]:
        """The buffered items of a queue being stopped (the caller hands them back)."""
        buf = self.buffers.get(worker.name, deque())
        items = list(buf)
        buf.clear()
        for msg in items:
            worker.inflight.pop(msg.reply or "", None)
        return items


def priority_pool(settings: Settings, start: Callable[[QueueWorker, Msg], None]) -> tuple[Settings, PriorityPool | None]:
    """For a dispatcher with ``priorities``: its settings serving exactly those queues, and the pool; else as is."""
    if not settings.priorities:
        return settings, None
    from dataclasses import replace

    weights = parse_priorities(settings.priorities)
    pool = PriorityPool(settings.concurrency, weights, strict=settings.strict_priority, start=start)
    return replace(settings, queues=tuple(n for n, _ in weights)), pool
