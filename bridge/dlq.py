"""Dead letters: tasks that ended ``terminated``, ``expired`` or ``unreachable``, and what operators do with them.

A dead letter stays the task it was (same id, same record, its attempt history); this module finds them through the
:class:`bridge.index.TaskIndex`, replays them in place, deletes them, and keeps each queue's dead letters within its
own retention (a count and an age), separate from the retention of completed tasks.

Replay is a compare-and-set on the task's record: of two concurrent replays of one dead letter only one save lands,
and only the one whose save landed puts a work item on the queue (with a message id naming the replay, so even a
retried publish cannot make a second run).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import structlog
from jetbridge.internal import (
    NS,
    ConflictError,
    JetbridgeError,
    JetStreamError,
    Requester,
    TaskNotFoundError,
    TaskRecord,
    TaskState,
    TaskStore,
    js_api,
    js_publish,
    names,
    now_ns,
    task_state_event,
)
from nats.aio.client import Client
from prometheus_client import CollectorRegistry, Counter, Gauge

from .index import Query, TaskIndex

log = structlog.get_logger("jetbridge.dlq")

DEAD_STATES = frozenset({TaskState.TERMINATED.value, TaskState.EXPIRED.value, TaskState.UNREACHABLE.value})
#: core NATS subject of the dead-letter event: ``jetbridge.event.dead_letter.<queue>.<task id>``
EVENT_PREFIX = "jetbridge.event.dead_letter"
#: the stream holding each queue's dead-letter retention (one message per queue)
POLICY_STREAM = "JETBRIDGE_DLQ_POLICY"
POLICY_PREFIX = "jetbridge.dlq.policy"


def is_dead(task: TaskRecord) -> bool:
    return task.state in DEAD_STATES


# Events and metrics -------------------------------------------------------------------------------------------

_counters: dict[int, Counter] = {}


def _counter(registry: CollectorRegistry) -> Counter:
    found = _counters.get(id(registry))
    if found is None:
        found = _counters[id(registry)] = Counter(
            "jetbridge_dead_letters", "Tasks this dispatcher saved as dead letters", ["queue", "type", "state", "code"],
            registry=registry)
    return found


def gauge(registry: CollectorRegistry) -> Gauge:
    """The ``jetbridge_dead_letters_stored`` gauge (per queue), set by whoever keeps an index."""
    return Gauge("jetbridge_dead_letters_stored", "Dead letters in the task store", ["queue"], registry=registry)


async def announce(nc: Client, registry: CollectorRegistry, task: TaskRecord) -> None:
    """After a save: if ``task`` just became a dead letter, count it and publish the dead-letter event."""
    if not is_dead(task):
        return
    _counter(registry).labels(task.queue, task.type, task.state, task.last_err_code or "none").inc()
    body = msgspec.json.encode({"task_id": task.id, "queue": task.queue, "task_type": task.type, "state": task.state,
                                "code": task.last_err_code, "error": task.last_err[:1024], "tries": task.tries})
    try:
        await nc.publish(f"{EVENT_PREFIX}.{task.queue}.{task.id}", body)
    except Exception:  # noqa: BLE001 - events are best effort
        pass
    log.info("dead_letter", task_id=task.id, queue=task.queue, type=task.type, state=task.state,
             code=task.last_err_code or None)


# Filters ------------------------------------------------------------------------------------------------------


def query(*, queue: str | None = None, task_type: str | None = None, code: str | None = None,
          text: str | None = None, since_ns: int | None = None, until_ns: int | None = None,
          states: Iterable[str] | None = None) -> Query:
    """The dead letters (or ``states``) matching the filters the CLI takes."""
    chosen = frozenset(states) if states is not None else DEAD_STATES
    return Query(states=chosen, queue=queue, type=task_type, code=code, text=text, since_ns=since_ns,
                 until_ns=until_ns)


# Replay -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replayed:
    task_id: str
    done: bool
    why: str = ""


class Pacer:
    """At most ``rate`` operations per second (0: no limit); awaits between them rather than bursting."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self._next > now:
            await anyio.sleep(self._next - now)
        self._next = max(now, self._next) + self.interval


async def replay(nc: Client, rq: Requester, task_id: str, *, queue: str | None = None,
                 payload: bytes | None = None, content_type: str | None = None, dry_run: bool = False) -> Replayed:
    """Run a dead letter again, in place: same id, its history kept, ``replays`` counted, ``tries`` from zero.

    ``queue`` moves it to another queue; ``payload`` replaces its payload (the fix for a bad input). A deadline that
    has passed is dropped, or the task would expire again at once. Only a dead letter is replayed; of concurrent
    replays, one wins and the others report that it was replayed already.
    """
    store = TaskStore(rq)
    try:
        task, seq = await store.load(task_id)
    except TaskNotFoundError:
        return Replayed(task_id, False, "not found")
    if not is_dead(task):
        return Replayed(task_id, False, f"not a dead letter (state {task.state})")
    target = queue or task.queue
    if dry_run:
        return Replayed(task_id, True, f"would replay on {target}")
    changes: dict[str, Any] = {"state": TaskState.RETRY.value, "tries": 0, "result": None, "queue": target,
                               "replays": task.replays + 1, "progress": None, "progress_message": ""}
    if task.is_past_deadline(now_ns()):
        changes["deadline"] = None
    if payload is not None:
        changes["payload"] = payload
        changes["content_type"] = content_type if content_type is not None else task.content_type
    new = msgspec.structs.replace(task, **changes)
    try:
        new_seq = await store.save(new, seq)
    except ConflictError:
        current, _ = await store.load(task_id)
        return Replayed(task_id, False, f"changed meanwhile (now {current.state}): replayed elsewhere?")
    item = names.work_item(task_id)
    try:
        await js_publish(rq, names.queue_subject(target, task_id), item,
                         {names.H_MSG_ID: f"{task_id}:replay:{new.replays}"})
    except (JetStreamError, JetbridgeError) as exc:
        try:  # not on a queue: put the dead letter back as it was
            await store.save(task, new_seq)
        except JetbridgeError:
            pass
        return Replayed(task_id, False, f"could not queue it on {target}: {exc}")
    await nc.publish(names.task_state_event_subject(task_id), task_state_event(new))
    log.info("dead_letter_replayed", task_id=task_id, queue=target, type=task.type, replay=new.replays)
    return Replayed(task_id, True)


async def delete(rq: Requester, ids: Iterable[str], *, only_dead: bool = True) -> list[str]:
    """Remove tasks from the store (by default only if they are still dead letters); returns those removed."""
    store = TaskStore(rq)
    removed = []
    for task_id in ids:
        try:
            if only_dead:
                task, _ = await store.load(task_id)
                if not is_dead(task):
                    continue
            await store.delete(task_id)
            removed.append(task_id)
        except TaskNotFoundError:
            pass
    return removed


# Retention ----------------------------------------------------------------------------------------------------


class Retention(msgspec.Struct, omit_defaults=True):
    """How many dead letters a queue keeps, and for how long (0: no limit)."""

    max_count: int = 0
    max_age: float = 0.0


async def _ensure_policy_stream(rq: Requester) -> None:
    try:
        await js_api(rq, f"STREAM.INFO.{POLICY_STREAM}")
    except JetStreamError:
        await js_api(rq, f"STREAM.CREATE.{POLICY_STREAM}", {
            "name": POLICY_STREAM, "subjects": [f"{POLICY_PREFIX}.*"], "max_msgs_per_subject": 1,
            "storage": "file", "num_replicas": 1, "allow_direct": True})


async def set_retention(rq: Requester, queue: str, retention: Retention) -> None:
    if not names.is_valid_name(queue):
        raise ValueError(f"queue name {queue!r} is invalid")
    await _ensure_policy_stream(rq)
    await js_publish(rq, f"{POLICY_PREFIX}.{queue}", msgspec.json.encode(retention))


async def get_retention(rq: Requester, queue: str) -> Retention:
    import base64

    try:
        reply = await js_api(rq, f"STREAM.MSG.GET.{POLICY_STREAM}", {"last_by_subj": f"{POLICY_PREFIX}.{queue}"})
    except JetStreamError:
        return Retention()
    return msgspec.json.decode(base64.b64decode(reply["message"]["data"]), type=Retention)


def over_retention(index: TaskIndex, queue: str, retention: Retention, now: int) -> list[str]:
    """The dead letters of ``queue`` that its retention drops: older than ``max_age``, and beyond the newest
    ``max_count``. Pure (reads the index only)."""
    letters = sorted(index.page(query(queue=queue), limit=10**9).entries, key=lambda e: e.updated_ns, reverse=True)
    drop: list[str] = []
    for i, entry in enumerate(letters):
        too_many = retention.max_count > 0 and i >= retention.max_count
        too_old = retention.max_age > 0 and now - entry.updated_ns > retention.max_age * NS
        if too_many or too_old:
            drop.append(entry.id)
    return drop


async def enforce_retention(rq: Requester, index: TaskIndex, queues: Iterable[str]) -> dict[str, int]:
    """Delete the dead letters each queue's retention drops; returns how many per queue."""
    out: dict[str, int] = {}
    for queue in queues:
        retention = await get_retention(rq, queue)
        if retention.max_count or retention.max_age:
            removed = await delete(rq, over_retention(index, queue, retention, now_ns()))
            for task_id in removed:
                index.forget(task_id)
            out[queue] = len(removed)
            if out[queue]:
                log.info("dead_letters_expired", queue=queue, removed=out[queue], max_count=retention.max_count,
                         max_age_s=retention.max_age)
    return out
