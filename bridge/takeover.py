"""One live attempt per task: what a dispatcher does with a work item for a task that is already ``active``.

A task is ``active`` while some dispatcher runs an attempt of it, and that dispatcher's id is stored on the task
(``dispatcher``). A second work item for it can still arrive: a retry schedule or ``task retry`` published one, a
reconciler raced, a hostile producer forged one, or the holder's item lease ran out because the holder died or was
paused. A queue stream keeps one item per task subject, so the new item has replaced the one the holder owns.

Starting an attempt for it would run the task twice at once. Instead (:meth:`Takeover.check`):

- the holder is this dispatcher and the attempt runs: the attempt **adopts** the item (keeps it in progress on the
  server and settles it with its own outcome);
- the holder is another dispatcher: it is asked, over NATS, to adopt the item; if it answers that it does not run
  the task (its attempt ended and was saved, or it restarted), the item takes the task over at once;
- the holder does not answer (dead, SIGSTOPped, cut off) or is unknown (an asyncjobs record): the task is an
  **orphan**, taken over only after one more heartbeat timeout. A protocol 1.1 handler fences itself when its
  heartbeats go unacknowledged for one heartbeat timeout, so by then the old attempt has stopped.

The rules for the orphan wait are pure (:class:`OrphanWaits`); the adopt service and the question are the I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum

import msgspec
import nats.errors
import structlog
from jetbridge.internal import TaskRecord, names, now_ns, parse_ns
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .attempts import Attempt
from .logs import RateLimitedLog

log = structlog.get_logger("jetbridge.takeover")

ADOPT_SUBJECT_PREFIX = "jetbridge.dispatcher"


#: how long an item waits when its task is being started by this dispatcher right now
STARTING_RETRY = 0.5


def adopt_subject(dispatcher_id: str) -> str:
    return f"{ADOPT_SUBJECT_PREFIX}.{dispatcher_id}.adopt"


def ack_prefix(queue: str) -> str:
    """Every delivery of ``queue``'s items is acknowledged on a subject under this prefix."""
    return f"$JS.ACK.{names.queue_stream(queue)}.{names.QUEUE_CONSUMER}."


class Verdict(StrEnum):
    #: an attempt of this dispatcher took the item over; do not settle it
    ADOPTED = "adopted"
    #: the holder (another dispatcher) took the item over; do not settle it
    HANDED_OVER = "handed_over"
    #: an orphan still inside its wait: put the item back for the delay returned
    WAIT = "wait"
    #: this dispatcher is starting the task's attempt right now: put the item back for a moment, then it is adopted
    STARTING = "starting"
    #: nobody runs the task: start the next attempt
    TAKE_OVER = "take_over"


class _AdoptRequest(msgspec.Struct):
    task_id: str
    queue: str
    reply: str


class _AdoptAnswer(msgspec.Struct):
    adopted: bool
    #: when the answering process started (ns): a "no" from a process younger than the attempt (a restart under the
    #: same dispatcher id) says nothing about the attempt's handler, which the earlier process started
    since: int = 0


class Claims:
    """Tasks this dispatcher is starting: being saved ``active``, or saved and their attempt not yet registered.

    An item for such a task must not be taken as an orphan (the attempt cannot adopt it yet); it waits a moment.
    A count per task, because two deliveries of one task may race to claim it and only one save lands.
    """

    def __init__(self) -> None:
        self._n: dict[str, int] = {}

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._n

    def begin(self, task_id: str) -> None:
        self._n[task_id] = self._n.get(task_id, 0) + 1

    def end(self, task_id: str) -> None:
        left = self._n.get(task_id, 0) - 1
        if left > 0:
            self._n[task_id] = left
        else:
            self._n.pop(task_id, None)


class OrphanWaits:
    """When an orphaned ``active`` task may be taken over: ``wait`` seconds after this dispatcher first saw it.

    Keyed by task and attempt number, so a task that moved on starts a fresh wait. Bounded: the oldest entries go
    first (forgetting one only makes that task wait again, never run early).
    """

    def __init__(self, capacity: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._capacity = capacity
        self._clock = clock

    def remaining(self, task_id: str, tries: int, wait: float) -> float:
        """Seconds until the task may be taken over (0: now)."""
        now = self._clock()
        first = self._seen.get(task_id)
        if first is None or first[1] != tries:
            self._seen[task_id] = (now, tries)
            self._seen.move_to_end(task_id)
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return wait
        left = first[0] + wait - now
        if left <= 0:
            del self._seen[task_id]
            return 0.0
        return left


class Takeover:
    """Answers adopt requests for this dispatcher's attempts, and decides what to do with items of active tasks."""

    def __init__(self, nc: Client, dispatcher_id: str, attempt_for: Callable[[str], Attempt | None], claims: Claims,
                 *, ask_timeout: float = 1.0) -> None:
        self._nc = nc
        self._claims = claims
        self.id = dispatcher_id
        self._attempt_for = attempt_for
        self._ask_timeout = ask_timeout
        self.orphans = OrphanWaits()
        self._sub: Subscription | None = None
        self._bad = RateLimitedLog(log, "bad_adopt_request")
        #: attempts this process started were saved after this time (an earlier process may have had the same id)
        self._started_ns = now_ns()

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(adopt_subject(self.id), cb=self._on_adopt)

    async def close(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # noqa: BLE001 - a closed connection has no subscription left
                pass

    def adopt(self, task_id: str, queue: str, reply: str) -> bool:
        """Hand ``reply`` (a delivery of ``task_id``'s item on ``queue``) to the running attempt, if there is one."""
        attempt = self._attempt_for(task_id)
        if attempt is None or attempt.finished or attempt.queue != queue or not reply.startswith(ack_prefix(queue)):
            return False
        if reply not in attempt.adopted:
            attempt.adopted.append(reply)
        return True

    async def _on_adopt(self, msg: Msg) -> None:
        try:
            request = msgspec.json.decode(msg.data, type=_AdoptRequest)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            self._bad.warning(error=str(exc))
            return
        adopted = self.adopt(request.task_id, request.queue, request.reply)
        if adopted:
            log.info("item_adopted", task_id=request.task_id, queue=request.queue,
                     why="another dispatcher got a second work item for a task this one runs")
        if msg.reply:
            await self._nc.publish(msg.reply, msgspec.json.encode(_AdoptAnswer(adopted, self._started_ns)))

    async def check(self, task: TaskRecord, queue: str, reply: str, lease: float) -> tuple[Verdict, float]:
        """What to do with a delivery (ack subject ``reply``) of an item for ``task``, which is ``active``.

        Returns the verdict and, for :attr:`Verdict.WAIT` and :attr:`Verdict.STARTING`, how long to put the item
        back for.
        """
        if task.id in self._claims:  # saved active here, attempt not registered yet: it can adopt in a moment
            return Verdict.STARTING, STARTING_RETRY
        if self.adopt(task.id, queue, reply):
            log.info("item_adopted", task_id=task.id, queue=queue, type=task.type,
                     why="a second work item arrived for a task this dispatcher runs")
            return Verdict.ADOPTED, 0.0
        holder = task.dispatcher
        if holder == self.id and task.tried and parse_ns(task.tried) >= self._started_ns:
            return Verdict.TAKE_OVER, 0.0  # this process's own attempt, and it is over (it would have adopted)
        if holder and holder != self.id and names.is_valid_name(holder):
            answer = await self._ask(holder, task.id, queue, reply)
            if answer is not None and answer.adopted:
                return Verdict.HANDED_OVER, 0.0
            if answer is not None and task.tried and parse_ns(task.tried) >= answer.since:
                return Verdict.TAKE_OVER, 0.0  # the process that ran the attempt says it is over
            # no answer, or a process that started after the attempt did: the attempt's own may still run
        left = self.orphans.remaining(task.id, task.tries, lease)
        if left > 0:
            log.info("orphan_wait", task_id=task.id, queue=queue, type=task.type, holder=holder or None,
                     wait_s=round(left, 3), why="the attempt's dispatcher does not answer; its handler gets one "
                                                "heartbeat timeout to stop before the next attempt starts")
            return Verdict.WAIT, left
        return Verdict.TAKE_OVER, 0.0

    async def _ask(self, holder: str, task_id: str, queue: str, reply: str) -> _AdoptAnswer | None:
        """The holder's answer (did it adopt the item, and since when it runs), or None: no answer."""
        body = msgspec.json.encode({"task_id": task_id, "queue": queue, "reply": reply})
        try:
            msg = await self._nc.request(adopt_subject(holder), body, timeout=self._ask_timeout)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return None
        except Exception as exc:  # noqa: BLE001 - a connection problem is the same as no answer
            log.warning("adopt_request_failed", task_id=task_id, queue=queue, holder=holder, error=str(exc))
            return None
        try:
            return msgspec.json.decode(msg.data, type=_AdoptAnswer)
        except (msgspec.DecodeError, RecursionError):
            return None
