"""Cron schedules, stored where asyncjobs keeps them, and the one way a schedule's slot becomes a task.

A schedule's definition is asyncjobs' scheduled-task document in KV bucket ``CHORIA_AJ_CONFIGURATION`` under
``scheduled_tasks.<name>`` (``ajc cron list/view`` read it, ``ajc cron add`` writes it), with Jetbridge's own
members added after asyncjobs' (Go ignores members it does not know). What changes at every fire (last fire, next
fire, last task, counters, the cursor of decided slots) lives apart, under ``jetbridge_schedule_state.<name>``,
so firing never rewrites the definition (asyncjobs' scheduler would add a second cron entry for every write).

A slot becomes a task with the id :func:`jetbridge._cron.slot_task_id` gives, created with a compare-and-set
against "no such task": however many processes fire a slot, and whoever dies half way, one task exists per slot.
The task's payload is the stored payload bytes, unchanged (asyncjobs encodes them a second time).
"""

from __future__ import annotations

import base64
import builtins
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from . import _names as names
from ._cron import CronSpec, parse_cron, slot_task_id
from ._errors import ConfigError, ConflictError, DuplicateTaskError, JetbridgeError, TaskNotFoundError
from ._events import task_state_event
from ._ksuid import new_ksuid
from ._producer import DEFAULT_MAX_TRIES, Producer, TaskSpec
from ._protocol import JSON_CONTENT_TYPE, Bytes
from ._store import js_publish
from ._task import TaskState
from ._timeutil import NS, format_ns, now_ns, parse_ns

CONFIG_BUCKET = "CHORIA_AJ_CONFIGURATION"
DEF_PREFIX = "scheduled_tasks"
STATE_PREFIX = "jetbridge_schedule_state"
OVERLAP_POLICIES = ("skip", "buffer_one", "allow")
#: a slot may fire this late by default (a dispatcher outage shorter than this loses nothing)
DEFAULT_CATCHUP_NS = 60 * NS
#: asyncjobs refuses shorter deadline offsets
MIN_DEADLINE_NS = 30 * NS
_MISSING = (KeyNotFoundError, KeyDeletedError)
_SCHEDULE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,200}$")


class ScheduleDoc(msgspec.Struct, kw_only=True, omit_defaults=True):
    """asyncjobs' scheduled task (member order and presence rules kept), plus Jetbridge's members."""

    name: str
    schedule: str
    queue: str
    task_type: str
    payload: bytes | None
    deadline: int = 0
    max_tries: int
    created_at: str
    # Jetbridge's own (asyncjobs ignores them).
    overlap: str = "allow"
    catchup: int = 0
    jitter: int = 0
    paused: bool = False
    note: str = ""
    content_type: str = ""
    updated_at: str = ""

    @property
    def spec(self) -> CronSpec:
        return parse_cron(self.schedule)

    @property
    def catchup_ns(self) -> int:
        return self.catchup if self.catchup > 0 else DEFAULT_CATCHUP_NS

    @property
    def start_ns(self) -> int:
        """Slots after this time belong to the current definition (it was created, updated or resumed then)."""
        return parse_ns(self.updated_at or self.created_at)


class ScheduleState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the firing processes have done with a schedule; every change is a compare-and-set."""

    #: the last slot decided (fired, buffered, skipped or missed), UTC ns
    cursor: int = 0
    #: a slot held back by ``buffer_one`` until the running task ends
    buffered: int = 0
    last_fire: str = ""
    last_slot: str = ""
    last_task: str = ""
    next_fire: str = ""
    fires: int = 0
    #: slots older than the catch-up window when they could be decided
    missed: int = 0
    #: slots not fired because the previous task still ran (overlap policy)
    skipped: int = 0


_doc_decoder = msgspec.json.Decoder(ScheduleDoc)
_state_decoder = msgspec.json.Decoder(ScheduleState)
_json = msgspec.json.Encoder()


def decode_doc(data: bytes) -> ScheduleDoc:
    return _doc_decoder.decode(data)


def decode_state(data: bytes | None) -> ScheduleState:
    return _state_decoder.decode(data) if data else ScheduleState()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _SCHEDULE_NAME.match(name):
        raise ConfigError(f"schedule name {name!r} is invalid: use 1-200 letters, digits, '_' and '-'")
    return name


def def_key(name: str) -> str:
    return f"{DEF_PREFIX}.{name}"


def state_key(name: str) -> str:
    return f"{STATE_PREFIX}.{name}"


def _seconds_ns(value: timedelta | float | int | None, what: str, minimum: int = 0) -> int:
    if value is None:
        return 0
    ns = int((value.total_seconds() if isinstance(value, timedelta) else float(value)) * NS)
    if ns < 0 or (ns and ns < minimum):
        raise ConfigError(f"{what} must be 0 or at least {minimum / NS:g}s")
    return ns


@dataclass(frozen=True)
class ScheduleView:
    """A schedule's definition with what has been done with it."""

    doc: ScheduleDoc
    state: ScheduleState

    def to_dict(self) -> dict[str, Any]:
        d = self.doc
        payload: Any = None
        if d.payload is not None:
            try:
                payload = d.payload.decode()
            except UnicodeDecodeError:
                payload = "base64:" + base64.b64encode(d.payload).decode()
        return {
            "name": d.name, "schedule": d.schedule, "tz": d.spec.tz, "queue": d.queue, "type": d.task_type,
            "payload": payload, "max_tries": d.max_tries, "deadline_s": d.deadline / NS, "overlap": d.overlap,
            "catchup_s": d.catchup_ns / NS, "jitter_s": d.jitter / NS, "paused": d.paused, "note": d.note,
            "created_at": d.created_at, "updated_at": d.updated_at,
            "last_fire": self.state.last_fire, "last_slot": self.state.last_slot, "last_task": self.state.last_task,
            "next_fire": "" if d.paused else format_ns(d.spec.next_after(max(self.state.cursor, d.start_ns))),
            "fires": self.state.fires, "missed": self.state.missed, "skipped": self.state.skipped,
        }


async def config_bucket(nc: Client, *, create: bool = True) -> KeyValue:
    """asyncjobs' configuration bucket, created as asyncjobs creates it when missing."""
    js = nc.jetstream()
    try:
        return await js.key_value(CONFIG_BUCKET)
    except BucketNotFoundError:
        if not create:
            raise
    return await js.create_key_value(KeyValueConfig(bucket=CONFIG_BUCKET, history=1, storage=StorageType.FILE))


async def schedule_names(kv: KeyValue) -> builtins.list[str]:
    """The names of the stored schedules (a watch of ``scheduled_tasks.*`` read up to its end marker)."""
    watcher = await kv.watch(f"{DEF_PREFIX}.*", meta_only=True, ignore_deletes=True)
    found: builtins.list[str] = []
    try:
        async for entry in watcher:
            if entry is None:
                break
            found.append(entry.key.split(".", 1)[1])
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return sorted(found)


async def fire(producer: Producer, doc: ScheduleDoc, task_id: str) -> bool:
    """Create the task ``task_id`` from the schedule; False when it exists already (another process fired it).

    A process that died between storing the task and queueing its item leaves a ``new`` task without an item;
    whoever meets the duplicate queues the item again (the queue drops a second copy: the item's message id is
    the task id), so the slot is not lost with the process that first fired it.
    """
    content_type = doc.content_type or JSON_CONTENT_TYPE
    payload: Any = Bytes(doc.payload, content_type) if doc.payload is not None else None
    spec = TaskSpec(type=doc.task_type, payload=payload, queue=doc.queue, task_id=task_id,
                    deadline=timedelta(microseconds=doc.deadline // 1000) if doc.deadline > 0 else None,
                    max_tries=doc.max_tries if doc.max_tries > 0 else DEFAULT_MAX_TRIES)
    record, queue, _ = producer._build(spec)
    try:
        seq = await producer._store_new(record, queue, None)
    except DuplicateTaskError:
        await _requeue_unqueued(producer, task_id)
        return False
    await producer._queue_item(record, queue, seq)
    await producer._nc.publish(names.task_state_event_subject(record.id), task_state_event(record))
    return True


async def _requeue_unqueued(producer: Producer, task_id: str) -> None:
    try:
        task, seq = await producer._store.load(task_id)
    except JetbridgeError:
        return
    fresh = now_ns() - task.created_ns < 90 * NS  # inside the queue's duplicate window (120 s)
    if task.task_state is TaskState.NEW and task.tries == 0 and fresh:
        item = names.work_item(task_id)
        try:
            # the same message id as Producer._queue_item's for this version: a duplicate of it, never of a task
            # that had this id before
            await js_publish(producer._rq, names.queue_subject(task.queue, task_id), item,
                             {names.H_MSG_ID: f"{task_id}:{seq}"})
        except JetbridgeError:
            pass
        except Exception:  # noqa: BLE001 - the reconciler puts orphans back too; this is the fast path
            pass


class Schedules:
    """Add, inspect, pause, trigger, backfill and delete schedules (the dispatchers fire them).

    Args:
        nc: a connected nats-py client.
        producer: used to create triggered and backfilled tasks (signing included); one is made if not given.
    """

    def __init__(self, nc: Client, *, producer: Producer | None = None) -> None:
        self._nc = nc
        self._producer = producer or Producer(nc)
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await config_bucket(self._nc)
        return self._kv

    async def add(
        self, name: str, schedule: str, task_type: str, payload: Any = None, *, queue: str = "DEFAULT",
        tz: str | None = None, max_tries: int = DEFAULT_MAX_TRIES, deadline: timedelta | float | None = None,
        overlap: str = "skip", catchup: timedelta | float | None = 60.0, jitter: timedelta | float | None = None,
        content_type: str | None = None,
    ) -> ScheduleView:
        """Create a schedule, or replace the one of that name at once (its counters and last fire are kept).

        Args:
            schedule: five cron fields, a descriptor (``@daily``) or ``@every 10m``; ``tz`` the zone it is in.
            payload: JSON-serialisable value, or bytes / :class:`Bytes`; every task gets exactly these bytes.
            deadline: each task's deadline, counted from its fire time (at least 30 s, as asyncjobs requires).
            overlap: ``skip`` a slot while the previous task is unfinished, ``buffer_one`` (run it once that task
                ends, holding at most one), or ``allow`` (always fire).
            catchup: how late a slot may still fire after an outage; older slots are counted as missed.
            jitter: fire each slot up to this much later (the same delay in every process).
        """
        check_name(name)
        spec = parse_cron(schedule, tz)
        if overlap not in OVERLAP_POLICIES:
            raise ConfigError(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, not {overlap!r}")
        catchup_ns = _seconds_ns(catchup, "catchup", NS) or DEFAULT_CATCHUP_NS
        jitter_ns = _seconds_ns(jitter, "jitter")
        if jitter_ns >= catchup_ns:
            raise ConfigError("jitter must be shorter than the catch-up window, or jittered slots count as missed")
        if spec.every_ns and jitter_ns >= spec.every_ns:
            raise ConfigError("jitter must be shorter than the @every interval")
        deadline_ns = _seconds_ns(deadline, "deadline", MIN_DEADLINE_NS)
        record, queue, _ = self._producer._build(TaskSpec(type=task_type, payload=payload, queue=queue,
                                                      max_tries=max_tries, content_type=content_type))
        kv = await self._bucket()
        now = format_ns(now_ns())
        doc = ScheduleDoc(name=name, schedule=spec.text, queue=queue, task_type=task_type, payload=record.payload,
                          deadline=deadline_ns, max_tries=max_tries, created_at=now, overlap=overlap,
                          catchup=catchup_ns, jitter=jitter_ns, content_type=record.content_type, updated_at=now)
        try:
            entry = await kv.get(def_key(name))
            assert entry.value is not None
            old = decode_doc(entry.value)
            doc = msgspec.structs.replace(doc, created_at=old.created_at, paused=old.paused, note=old.note)
            await kv.update(def_key(name), _json.encode(doc), last=entry.revision)
        except (*_MISSING, AssertionError):
            await kv.create(def_key(name), _json.encode(doc))
        except KeyWrongLastSequenceError:
            raise ConflictError(f"schedule {name} was changed by someone else at the same time: try again") from None
        return await self.get(name)

    async def _load(self, name: str) -> tuple[ScheduleDoc, int]:
        kv = await self._bucket()
        try:
            entry = await kv.get(def_key(check_name(name)))
        except _MISSING:
            raise TaskNotFoundError(f"schedule {name} does not exist (see `jetbridge schedule list`)") from None
        if entry.value is None:
            raise TaskNotFoundError(f"schedule {name} does not exist (see `jetbridge schedule list`)")
        try:
            return decode_doc(entry.value), entry.revision or 0
        except (msgspec.DecodeError, ValueError) as exc:
            raise ConfigError(f"schedule {name}: the stored document is not a schedule: {exc}") from None

    async def _state(self, name: str) -> tuple[ScheduleState, int | None]:
        kv = await self._bucket()
        try:
            entry = await kv.get(state_key(name))
        except _MISSING:
            return ScheduleState(), None
        return decode_state(entry.value), entry.revision

    async def get(self, name: str) -> ScheduleView:
        doc, _ = await self._load(name)
        state, _ = await self._state(name)
        return ScheduleView(doc, state)

    async def list(self) -> list[ScheduleView]:
        views = []
        for name in await schedule_names(await self._bucket()):
            try:
                views.append(await self.get(name))
            except JetbridgeError:
                continue
        return views

    async def _change(self, name: str, **changes: Any) -> ScheduleView:
        kv = await self._bucket()
        for _ in range(5):
            doc, revision = await self._load(name)
            new = msgspec.structs.replace(doc, **changes)
            try:
                await kv.update(def_key(name), _json.encode(new), last=revision)
                return await self.get(name)
            except KeyWrongLastSequenceError:
                continue
        raise ConflictError(f"schedule {name} keeps changing under us: try again")

    async def pause(self, name: str, note: str = "") -> ScheduleView:
        """Stop firing until :meth:`resume`; slots while paused are not fired later."""
        return await self._change(name, paused=True, note=note)

    async def resume(self, name: str, note: str = "") -> ScheduleView:
        """Fire again, from the next slot after now."""
        return await self._change(name, paused=False, note=note, updated_at=format_ns(now_ns()))

    async def delete(self, name: str) -> None:
        await self._load(name)
        kv = await self._bucket()
        await kv.delete(def_key(name))
        try:
            await kv.purge(state_key(name))
        except JetbridgeError:
            pass

    async def trigger(self, name: str) -> str:
        """Fire the schedule now, outside its slots; returns the new task's id."""
        doc, _ = await self._load(name)
        task_id = f"{name}:trigger:{new_ksuid()}"
        await fire(self._producer, doc, task_id)
        return task_id

    async def backfill(self, name: str, start: int, end: int, *, limit: int = 10_000) -> builtins.list[tuple[int, str, bool]]:
        """Fire every slot in ``[start, end]`` (UTC ns) that has not fired: ``(slot, task id, created)`` each.

        A slot that fired already (or is backfilled twice) keeps its one task: the ids are the slots' own.
        """
        doc, _ = await self._load(name)
        if end < start:
            raise ConfigError("backfill: --to is before --from")
        slots = doc.spec.slots(start - 1, end, limit + 1)
        if len(slots) > limit:
            raise ConfigError(f"backfill would fire more than {limit} slots: choose a shorter range")
        out = []
        for slot in slots:
            task_id = slot_task_id(name, slot)
            out.append((slot, task_id, await fire(self._producer, doc, task_id)))
        return out

    async def close(self) -> None:
        await self._producer.close()
