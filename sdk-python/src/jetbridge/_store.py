"""The task store: one JetStream subject per task, every save a compare-and-set on the subject's last sequence.

It talks to the JetStream API directly (one request per operation, msgspec for JSON) rather than through
nats-py's JetStream wrappers, because this is the dispatcher's hot path and those wrappers parse JSON twice.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import msgspec
import nats.errors
from nats.aio.msg import Msg

from . import _names as names
from ._errors import ConflictError, CorruptTaskError, DuplicateTaskError, TaskNotFoundError, TransportError
from ._requester import Requester
from ._task import TaskRecord, decode_task, encode_task

#: JetStream error codes this module turns into Jetbridge errors.
ERR_WRONG_LAST_SEQUENCE = (10071, 10164)
ERR_NO_MESSAGE = 10037
ERR_STREAM_NOT_FOUND = 10059
#: "JetStream system temporarily unavailable": no meta leader (a cluster election)
ERR_UNAVAILABLE = 10008
ERR_MAX_MESSAGES = (10077, 10078)

_json = msgspec.json.Decoder()


class JetStreamError(Exception):
    """A JetStream API error reply."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


class PubAck(msgspec.Struct):
    stream: str
    seq: int
    duplicate: bool = False


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAckReply(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_puback = msgspec.json.Decoder(_PubAckReply)


async def js_publish(
    requester: Requester, subject: str, data: bytes, headers: dict[str, str] | None = None, timeout: float = 5.0,
) -> PubAck:
    """Publish to a stream and wait for its ack; raises :class:`JetStreamError` or :class:`TransportError`."""
    try:
        msg = await requester.request(subject, data, timeout=timeout, headers=headers)
    except nats.errors.NoRespondersError:
        raise JetStreamError(503, ERR_STREAM_NOT_FOUND, f"no stream takes subject {subject}") from None
    except nats.errors.TimeoutError:
        raise TransportError(f"JetStream did not ack a publish to {subject} within {timeout}s") from None
    return read_puback(msg.data)


def read_puback(data: bytes) -> PubAck:
    """A publish acknowledgement; raises :class:`JetStreamError` for the error the stream answered with."""
    reply = _puback.decode(data)
    if reply.error is not None:
        raise JetStreamError(reply.error.code, reply.error.err_code, reply.error.description)
    return PubAck(reply.stream, reply.seq, reply.duplicate)


def settled_puback(future: asyncio.Future[Msg] | None) -> PubAck | JetStreamError | None:
    """What a :meth:`Requester.send` to a stream came back with: its ack, the stream's error, or None for anything
    else (not sent, no reply in time, no responders, not an ack), which the caller tries again the awaited way."""
    if future is None or future.cancelled() or future.exception() is not None:
        return None
    try:
        return read_puback(future.result().data)
    except JetStreamError as exc:
        return exc
    except (msgspec.DecodeError, ValueError):
        return None


async def js_api(requester: Requester, subject: str, body: Any = None, timeout: float = 5.0) -> dict[str, Any]:
    """One JetStream API request (``$JS.API.…``) with a JSON body; returns the decoded reply."""
    payload = b"" if body is None else msgspec.json.encode(body)
    try:
        msg = await requester.request(f"$JS.API.{subject}", payload, timeout=timeout)
    except nats.errors.NoRespondersError:
        raise TransportError("JetStream is not enabled on this NATS server (no responders)") from None
    except nats.errors.TimeoutError:
        raise TransportError(f"JetStream API {subject} did not answer within {timeout}s") from None
    reply: dict[str, Any] = _json.decode(msg.data)
    error = reply.get("error")
    if error:
        raise JetStreamError(error.get("code", 0), error.get("err_code", 0), error.get("description", ""))
    return reply


def _has_quorum(info: dict[str, Any]) -> bool:
    """Whether a stream's info shows a leader with a quorum of current replicas (always true for R1)."""
    replicas = int(info.get("config", {}).get("num_replicas") or 1)
    if replicas <= 1:
        return True
    cluster = info.get("cluster") or {}
    if not cluster.get("leader"):
        return False
    current = 1 + sum(1 for r in cluster.get("replicas") or [] if r.get("current") and not r.get("offline"))
    return current > replicas // 2


class TaskStore:
    """Load and compare-and-set save task documents."""

    def __init__(self, requester: Requester, *, stream: str = names.TASKS_STREAM, direct: bool = False) -> None:
        self._rq = requester
        self.stream = stream
        #: use the direct-get API (faster; needs ``allow_direct`` on the stream)
        self.direct = direct

    async def load(self, task_id: str, *, direct: bool | None = None) -> tuple[TaskRecord, int]:
        """The task and the sequence to save against; raises :class:`TaskNotFoundError`.

        A corrupt document raises :class:`CorruptTaskError` naming the task. ``direct=False`` asks the stream
        leader even when direct gets are on (a direct get may be answered by a replica that is behind).
        """
        data, seq = await self.load_raw(task_id, direct=direct)
        try:
            return decode_task(data), seq
        except (msgspec.DecodeError, ValueError) as exc:
            raise CorruptTaskError(f"task {task_id}: the stored document is not a valid task: {exc}") from None

    async def load_raw(self, task_id: str, *, direct: bool | None = None) -> tuple[bytes, int]:
        subject = _task_subject(task_id)
        if self.direct if direct is None else direct:
            return await self._direct_get(task_id, subject)
        try:
            reply = await js_api(self._rq, f"STREAM.MSG.GET.{self.stream}", {"last_by_subj": subject})
        except JetStreamError as exc:
            if exc.err_code == ERR_NO_MESSAGE or exc.code == 404:
                raise TaskNotFoundError(f"task {task_id} not found") from None
            raise
        message = reply["message"]
        return base64.b64decode(message.get("data", "")), int(message["seq"])

    async def _direct_get(self, task_id: str, subject: str) -> tuple[bytes, int]:
        try:
            msg = await self._rq.request(f"$JS.API.DIRECT.GET.{self.stream}.{subject}", b"", timeout=5.0)
        except nats.errors.NoRespondersError:
            raise TransportError(f"task store {self.stream} does not answer direct gets") from None
        except nats.errors.TimeoutError:
            raise TransportError(f"task store {self.stream} did not answer within 5s") from None
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            raise TaskNotFoundError(f"task {task_id} not found")
        if status:
            raise TransportError(f"direct get of task {task_id} failed: {status} {headers.get('Description', '')}")
        return msg.data, int(headers["Nats-Sequence"])

    async def create(self, doc: TaskRecord, *, dedup_key: str | None = None) -> int:
        """Store a new task; raises :class:`DuplicateTaskError` when the id or dedup key is taken."""
        headers = {names.H_EXPECTED_LAST_SUBJECT_SEQ: "0"}
        if dedup_key:
            headers[names.H_MSG_ID] = dedup_key
        try:
            ack = await js_publish(self._rq, _task_subject(doc.id), encode_task(doc), headers)
        except JetStreamError as exc:
            if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                raise DuplicateTaskError(f"task {doc.id} already exists", task_id=doc.id) from None
            raise
        if ack.duplicate:
            try:
                original = await self._task_id_at(ack.seq)
            except JetStreamError as exc:
                if exc.err_code != ERR_NO_MESSAGE and exc.code != 404:
                    raise
                # The first task of this key is gone (deleted, or removed after it finished), but the server still
                # remembers the key until its dedup window ends: say so rather than fail with the server's 404.
                raise DuplicateTaskError(
                    f"dedup key {dedup_key!r} was used within the dedup window by a task that has since been "
                    f"removed; task {doc.id} was not enqueued: use another key, or enqueue again once the store's "
                    "dedup window (2 minutes by default) has passed", task_id="") from None
            raise DuplicateTaskError(
                f"a task with dedup key {dedup_key!r} was enqueued within the dedup window: {original}",
                task_id=original,
            )
        return ack.seq

    def create_nowait(self, task_id: str, data: bytes) -> asyncio.Future[Msg] | None:
        """Send :meth:`create` (without a dedup key) for pipelining; :meth:`created` reads the answer."""
        return self._rq.send(_task_subject(task_id), data, headers={names.H_EXPECTED_LAST_SUBJECT_SEQ: "0"})

    @staticmethod
    def created(task_id: str, future: asyncio.Future[Msg] | None) -> int | DuplicateTaskError | None:
        """The sequence a :meth:`create_nowait` stored, the duplicate it met, or None: ask with :meth:`create`."""
        ack = settled_puback(future)
        if isinstance(ack, JetStreamError):
            if ack.err_code in ERR_WRONG_LAST_SEQUENCE:
                return DuplicateTaskError(f"task {task_id} already exists", task_id=task_id)
            return None
        return None if ack is None or ack.duplicate else ack.seq

    async def _task_id_at(self, seq: int) -> str:
        reply = await js_api(self._rq, f"STREAM.MSG.GET.{self.stream}", {"seq": seq})
        return str(reply["message"]["subject"]).rsplit(".", 1)[-1]

    async def save(self, doc: TaskRecord, seq: int, *, ttl: float | None = None) -> int:
        """Compare-and-set save; raises :class:`ConflictError` when another writer got there first.

        ``ttl`` (seconds) makes the server delete the record after that long (finished-task retention).
        """
        data = encode_task(doc)
        return await self.save_raw(doc.id, data, seq, ttl=ttl)

    async def save_raw(self, task_id: str, data: bytes, seq: int, *, ttl: float | None = None) -> int:
        headers = {names.H_EXPECTED_LAST_SUBJECT_SEQ: str(seq)}
        if ttl:
            headers["Nats-TTL"] = f"{max(1, int(ttl))}s"
        try:
            ack = await js_publish(self._rq, _task_subject(task_id), data, headers)
        except JetStreamError as exc:
            if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                raise ConflictError(f"task {task_id} was changed by someone else (expected sequence {seq})") from None
            # e.g. no responders while a replicated store elects its leader: a transient failure, not a missing store
            raise TransportError(f"could not save task {task_id}: {exc}") from None
        return ack.seq

    async def stream_state(self, stream: str | None = None) -> str:
        """``"ok"``, ``"missing"`` or ``"unavailable"`` (it exists, or may, but no leader answers yet).

        A publish that finds no responders cannot tell a missing stream from one whose leader is being elected;
        this asks the JetStream API, which can.
        """
        try:
            info = await js_api(self._rq, f"STREAM.INFO.{stream or self.stream}", timeout=2.0)
        except JetStreamError as exc:
            return "missing" if exc.err_code == ERR_STREAM_NOT_FOUND else "unavailable"
        except TransportError:
            return "unavailable"
        return "ok" if _has_quorum(info) else "unavailable"

    async def delete(self, task_id: str) -> None:
        try:
            await js_api(self._rq, f"STREAM.PURGE.{self.stream}", {"filter": _task_subject(task_id)})
        except JetStreamError as exc:
            raise TransportError(f"could not delete task {task_id}: {exc}") from None


def _task_subject(task_id: str) -> str:
    """The subject of one task's record; an id that is not one subject token names no task.

    Without this check an id such as ``>`` or ``a.*`` would be a wildcard: a delete would purge every task, a
    load would read another task's record.
    """
    if not names.is_valid_name(task_id):
        raise TaskNotFoundError(f"no task has the id {task_id!r}: task ids are letters, digits, '_', ':' and '-'")
    return names.task_subject(task_id)
