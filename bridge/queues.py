"""Queues and the streams behind them, in asyncjobs' layout.

A queue is a work-queue stream ``CHORIA_AJ_Q_<name>`` with one item subject per task and a durable pull consumer
``WORKERS``. asyncjobs keeps a queue's limits in the consumer (``MaxDeliver`` = max tries, ``AckWait`` = max run
time, ``MaxAckPending`` = max concurrency). Jetbridge enforces tries centrally and uses ``AckWait`` as the lease a
dispatcher must renew, so it keeps its own values in the consumer's metadata and sets ``MaxDeliver`` to -1:
a redelivery never silently exhausts a task (an asyncjobs hole).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import anyio
from jetbridge.internal import (
    ERR_UNAVAILABLE,
    ConfigError,
    JetStreamError,
    QueueNotFoundError,
    Requester,
    TransportError,
    js_api,
    names,
)

from .policy import parse_policy

NS = 1_000_000_000
META_PREFIX = "jetbridge."
_STREAM_NOT_FOUND = 10059
_CONSUMER_NOT_FOUND = 10014
_NO_SUITABLE_PEERS = 10005
#: how long a stream create waits for a cluster that has just formed to be able to place it
PLACEMENT_WAIT = 30.0


@dataclass(frozen=True, kw_only=True)
class QueueConfig:
    """A queue's definition. Durations are seconds.

    Attributes:
        name: letters, digits, ``_``, ``-``, ``:``.
        max_tries: attempts per task at most, capping each task's own limit; -1: no queue limit.
        max_run_time: the longest one attempt may run.
        max_concurrent: attempts running at once across all dispatchers.
        max_entries: tasks waiting at most (0: no limit); see ``discard_old``.
        discard_old: when full, drop the oldest item instead of refusing new tasks (dropped tasks are marked
            by the reconciler, not lost silently, but refusing is the safe default).
        max_age: how long an item may wait in the queue (0: forever).
        lease: how long a dispatcher or handler may stay silent before its attempt is taken over.
        retry: the retry policy (see :func:`bridge.policy.parse_policy`).
        storage: ``file`` or ``memory``.
        replicas: stream replicas (1-5).
    """

    name: str
    max_tries: int = -1
    max_run_time: float = 3600.0
    max_concurrent: int = 100
    max_entries: int = 0
    discard_old: bool = False
    max_age: float = 0.0
    lease: float = 30.0
    retry: str = "default"
    storage: Literal["file", "memory"] = "file"
    replicas: int = 1
    #: True when the queue was made by asyncjobs (no Jetbridge metadata on its consumer)
    asyncjobs_native: bool = field(default=False, compare=False)

    def validate(self) -> QueueConfig:
        problems = []
        if not names.is_valid_name(self.name):
            problems.append(f"name {self.name!r} is invalid: use letters, digits, '_', '-' and ':'")
        if self.max_tries == 0 or self.max_tries < -1:
            problems.append(f"max_tries must be -1 (no limit) or >= 1, got {self.max_tries}")
        if not 0.1 <= self.max_run_time <= 7 * 86400:
            problems.append(f"max_run_time must be between 0.1s and 7 days, got {self.max_run_time}s")
        if not 1 <= self.max_concurrent <= 100_000:
            problems.append(f"max_concurrent must be between 1 and 100000, got {self.max_concurrent}")
        if self.max_entries < 0:
            problems.append(f"max_entries must be >= 0 (0: no limit), got {self.max_entries}")
        if self.max_age != 0 and self.max_age < 1:
            problems.append(f"max_age must be 0 (forever) or at least 1s, got {self.max_age}s")
        if not 0.1 <= self.lease <= max(self.max_run_time, 0.1):
            problems.append(f"lease must be between 0.1s and max_run_time ({self.max_run_time}s), got {self.lease}s")
        if self.storage not in ("file", "memory"):
            problems.append(f"storage must be 'file' or 'memory', got {self.storage!r}")
        if not 1 <= self.replicas <= 5:
            problems.append(f"replicas must be between 1 and 5, got {self.replicas}")
        try:
            parse_policy(self.retry)
        except ConfigError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigError(f"queue {self.name}: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("asyncjobs_native")
        return d


def _stream_config(q: QueueConfig) -> dict[str, Any]:
    return {
        "name": names.queue_stream(q.name),
        "description": "Choria Async Jobs Work Queue",
        "subjects": [names.queue_subjects(q.name)],
        "retention": "workqueue",
        "max_msgs_per_subject": 1,
        "max_msgs": q.max_entries or -1,
        "max_bytes": -1,
        "max_age": int(q.max_age * NS),
        "max_msg_size": -1,
        "discard": "old" if q.discard_old else "new",
        "storage": q.storage,
        "num_replicas": q.replicas,
        "duplicate_window": 120 * NS,
    }


def _consumer_config(q: QueueConfig) -> dict[str, Any]:
    return {
        "durable_name": names.QUEUE_CONSUMER,
        "ack_policy": "explicit",
        "ack_wait": int(q.lease * NS),
        "max_deliver": -1,
        "max_ack_pending": q.max_concurrent,
        "max_waiting": 512,
        "deliver_policy": "all",
        "metadata": {
            f"{META_PREFIX}max_tries": str(q.max_tries),
            f"{META_PREFIX}max_run_time": repr(q.max_run_time),
            f"{META_PREFIX}lease": repr(q.lease),
            f"{META_PREFIX}retry": q.retry,
        },
    }


def task_store_config(*, replicas: int = 1, storage: str = "file") -> dict[str, Any]:
    return {
        "name": names.TASKS_STREAM,
        "description": "Choria Async Jobs Tasks",
        "subjects": [f"{names.TASK_SUBJECT_PREFIX}.*"],
        "retention": "limits",
        "max_msgs_per_subject": 1,
        "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msg_size": -1,
        "discard": "old",
        "storage": storage,
        "num_replicas": replicas,
        "allow_direct": True,
        "allow_msg_ttl": True,
        "duplicate_window": 120 * NS,
    }


def schedule_store_config(*, replicas: int = 1, storage: str = "file") -> dict[str, Any]:
    return {
        "name": names.SCHEDULE_STREAM,
        "description": "Jetbridge retry schedules",
        "subjects": [f"{names.SCHEDULE_SUBJECT_PREFIX}.>", f"{names.DUE_SUBJECT_PREFIX}.>"],
        "retention": "workqueue",
        "max_msgs_per_subject": 1,
        "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msg_size": -1,
        "discard": "old",
        "storage": storage,
        "num_replicas": replicas,
        "allow_msg_schedules": True,
    }


def _from_server(stream: dict[str, Any], consumer: dict[str, Any]) -> QueueConfig:
    name = stream["config"]["name"][len(names.QUEUE_STREAM_PREFIX):]
    sc, cc = stream["config"], consumer["config"]
    meta = cc.get("metadata") or {}
    native = f"{META_PREFIX}lease" not in meta
    max_deliver = int(cc.get("max_deliver", -1))
    ack_wait = int(cc.get("ack_wait", 30 * NS)) / NS
    if native:
        return QueueConfig(
            name=name, max_tries=max_deliver if max_deliver > 0 else -1, max_run_time=ack_wait,
            max_concurrent=int(cc.get("max_ack_pending", 100)), max_entries=max(int(sc.get("max_msgs", -1)), 0),
            discard_old=sc.get("discard") == "old", max_age=int(sc.get("max_age", 0)) / NS, lease=ack_wait,
            retry="default", storage=sc.get("storage", "file"), replicas=int(sc.get("num_replicas", 1)),
            asyncjobs_native=True,
        )
    return QueueConfig(
        name=name, max_tries=int(meta.get(f"{META_PREFIX}max_tries", "-1")),
        max_run_time=float(meta.get(f"{META_PREFIX}max_run_time", ack_wait)),
        max_concurrent=int(cc.get("max_ack_pending", 100)), max_entries=max(int(sc.get("max_msgs", -1)), 0),
        discard_old=sc.get("discard") == "old", max_age=int(sc.get("max_age", 0)) / NS, lease=ack_wait,
        retry=meta.get(f"{META_PREFIX}retry", "default"), storage=sc.get("storage", "file"),
        replicas=int(sc.get("num_replicas", 1)),
    )


def _paused(cinfo: dict[str, Any]) -> str:
    if not cinfo.get("paused"):
        return ""
    until = str((cinfo.get("config") or {}).get("pause_until", ""))
    return "until resumed" if until.startswith("2200") else f"until {until}"


@dataclass(frozen=True)
class QueueInfo:
    config: QueueConfig
    waiting: int
    in_flight: int
    redelivered: int
    bytes: int
    #: "" or when a pause ends (``until resumed`` for a pause without an end); see bridge/pause.py
    paused: str = ""


class QueueAdmin:
    """Create, update, inspect, purge and delete queues; make sure the shared stores exist."""

    def __init__(self, requester: Requester, *, replicas: int = 1, storage: str = "file") -> None:
        self._rq = requester
        self._replicas = replicas
        self._storage = storage

    async def ensure_stores(self) -> dict[str, Any]:
        """Create the task store and the schedule store if they are missing; return the task store's config.

        Existing streams are left as they are (an asyncjobs task store keeps its settings).
        """
        tasks = await self._ensure_stream(task_store_config(replicas=self._replicas, storage=self._storage))
        await self._ensure_stream(schedule_store_config(replicas=self._replicas, storage=self._storage))
        return tasks

    async def _placing(self, subject: str, body: dict[str, Any], within: float = PLACEMENT_WAIT) -> dict[str, Any]:
        """A stream create or update, retried while a cluster that has just formed cannot place it yet ("no
        suitable peers", JetStream unavailable): the peers show up within seconds of the servers starting."""
        deadline = anyio.current_time() + within
        while True:
            try:
                return await js_api(self._rq, subject, body)
            except JetStreamError as exc:
                placing = exc.err_code in (_NO_SUITABLE_PEERS, ERR_UNAVAILABLE) or exc.code == 503
                if not placing or anyio.current_time() >= deadline:
                    raise
            await anyio.sleep(0.5)

    async def _ensure_stream(self, config: dict[str, Any]) -> dict[str, Any]:
        try:
            info = await js_api(self._rq, f"STREAM.INFO.{config['name']}")
            return dict(info["config"])
        except JetStreamError as exc:
            if exc.err_code != _STREAM_NOT_FOUND:
                raise TransportError(f"cannot read stream {config['name']}: {exc}") from None
        try:
            info = await self._placing(f"STREAM.CREATE.{config['name']}", config)
        except JetStreamError as exc:
            if "already in use" in exc.description:
                info = await js_api(self._rq, f"STREAM.INFO.{config['name']}")
            else:
                raise TransportError(f"cannot create stream {config['name']}: {exc}") from None
        return dict(info["config"])

    async def add(self, config: QueueConfig) -> QueueConfig:
        """Create a queue, or update it to ``config`` if it exists."""
        config.validate()
        await self.ensure_stores()
        stream = names.queue_stream(config.name)
        verb = "UPDATE" if await self._exists(config.name) else "CREATE"
        try:
            await self._placing(f"STREAM.{verb}.{stream}", _stream_config(config))
            await js_api(self._rq, f"CONSUMER.CREATE.{stream}.{names.QUEUE_CONSUMER}",
                         {"stream_name": stream, "config": _consumer_config(config)})
        except JetStreamError as exc:
            raise ConfigError(f"queue {config.name}: the server refused the definition: {exc.description}") from None
        return await self.get(config.name)

    async def update(self, name: str, **changes: Any) -> QueueConfig:
        current = await self.get(name)
        return await self.add(replace(current, asyncjobs_native=False, **changes))

    async def _exists(self, name: str) -> bool:
        try:
            await js_api(self._rq, f"STREAM.INFO.{names.queue_stream(name)}")
        except JetStreamError as exc:
            if exc.err_code == _STREAM_NOT_FOUND:
                return False
            raise
        return True

    async def get(self, name: str) -> QueueConfig:
        return (await self.info(name)).config

    async def info(self, name: str) -> QueueInfo:
        if not names.is_valid_name(name):
            raise ConfigError(f"queue name {name!r} is invalid: use letters, digits, '_', '-' and ':'")
        stream = names.queue_stream(name)
        try:
            sinfo = await js_api(self._rq, f"STREAM.INFO.{stream}")
            cinfo = await js_api(self._rq, f"CONSUMER.INFO.{stream}.{names.QUEUE_CONSUMER}")
        except JetStreamError as exc:
            if exc.err_code in (_STREAM_NOT_FOUND, _CONSUMER_NOT_FOUND):
                raise QueueNotFoundError(f"queue {name} does not exist: create it with `jetbridge queue add {name}`") from None
            raise TransportError(f"cannot read queue {name}: {exc}") from None
        return QueueInfo(
            config=_from_server(sinfo, cinfo), waiting=int(cinfo.get("num_pending", 0)),
            in_flight=int(cinfo.get("num_ack_pending", 0)), redelivered=int(cinfo.get("num_redelivered", 0)),
            bytes=int(sinfo["state"].get("bytes", 0)), paused=_paused(cinfo),
        )

    async def names(self) -> list[str]:
        reply = await js_api(self._rq, "STREAM.NAMES", {"subject": f"{names.QUEUE_SUBJECT_PREFIX}.>"})
        found = reply.get("streams") or []
        return sorted(s[len(names.QUEUE_STREAM_PREFIX):] for s in found if s.startswith(names.QUEUE_STREAM_PREFIX))

    async def purge(self, name: str) -> int:
        """Drop every waiting item; returns how many. The tasks stay in the store (mark them with `task cancel`)."""
        await self.info(name)
        reply = await js_api(self._rq, f"STREAM.PURGE.{names.queue_stream(name)}", {})
        return int(reply.get("purged", 0))

    async def delete(self, name: str) -> None:
        await self.info(name)
        await js_api(self._rq, f"STREAM.DELETE.{names.queue_stream(name)}")
